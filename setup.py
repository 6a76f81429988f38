"""Declares the optional C speedups; everything else is in pyproject.toml.

``optional=True``: when no compiler is available the build goes on without the extension and
``mlsockets.protocol.frames`` falls back to pure-Python masking.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mlsockets.protocol._speedups",
            sources=["mlsockets/protocol/_speedups.c"],
            optional=True,
            py_limited_api=True,
            define_macros=[("Py_LIMITED_API", "0x030B0000")],
        )
    ]
)
