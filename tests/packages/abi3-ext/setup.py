from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "abi3_ext",
            ["abi3_ext.c"],
            py_limited_api=True,
            define_macros=[("Py_LIMITED_API", "0x03080000")],
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp38"}},
)
