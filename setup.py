"""Build hook for the optional C accelerator; all other metadata lives in pyproject.toml.

The extension is optional: without a C compiler, Python headers or OpenSSL's
headers the build goes on and the dispatcher uses its pure-Python hot path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tcpdispatch._speedups",
            sources=["src/tcpdispatch/_speedups.c"],
            libraries=["crypto"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-missing-braces"],
            optional=True,
        )
    ]
)
