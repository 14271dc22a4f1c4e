/* An empty module: enough for the wheel to hold an ELF file of the machine that built it. */
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "foreign_platform_ext", NULL, -1, NULL};

PyMODINIT_FUNC PyInit_foreign_platform_ext(void) { return PyModule_Create(&module); }
