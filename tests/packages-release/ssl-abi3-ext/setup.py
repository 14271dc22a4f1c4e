from setuptools import Extension, setup

# An abi3 extension that links the OS release's libssl: built on Debian bullseye it needs
# libssl.so.1.1, which bookworm (OpenSSL 3) does not have.
setup(
    ext_modules=[
        Extension(
            "ssl_abi3_ext",
            ["ssl_abi3_ext.c"],
            libraries=["ssl", "crypto"],
            py_limited_api=True,
            define_macros=[("Py_LIMITED_API", "0x03080000")],
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp38"}},
)
