/* Optional C speedups for mlsockets.protocol.frames (RFC 6455 section 5.3 masking).
 *
 * apply_mask(data, mask) -> bytes: XOR data with the 4-byte mask repeated. Works a machine
 * word at a time; the pure-Python fallback in frames.py gives identical results.
 * Built against the limited API (abi3), so one wheel serves every CPython >= 3.11.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *
apply_mask(PyObject *self, PyObject *args)
{
    Py_buffer data, mask;
    PyObject *result = NULL;
    char *out;
    const unsigned char *in;
    Py_ssize_t n, i = 0;
    uint64_t key8;
    uint32_t key4;

    if (!PyArg_ParseTuple(args, "y*y*:apply_mask", &data, &mask))
        return NULL;
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must be 4 bytes");
        goto done;
    }
    n = data.len;
    result = PyBytes_FromStringAndSize(NULL, n);
    if (result == NULL)
        goto done;
    out = PyBytes_AsString(result);
    in = (const unsigned char *)data.buf;
    memcpy(&key4, mask.buf, 4);
    key8 = ((uint64_t)key4 << 32) | key4;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, in + i, 8);
        w ^= key8;
        memcpy(out + i, &w, 8);
    }
    for (; i < n; i++)
        out[i] = (char)(in[i] ^ ((const unsigned char *)mask.buf)[i & 3]);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

static PyMethodDef methods[] = {
    {"apply_mask", apply_mask, METH_VARARGS, "apply_mask(data, mask) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mlsockets.protocol._speedups", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
