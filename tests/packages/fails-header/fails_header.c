#include <Python.h>
#include <no_such_header_xyz.h>

PyMODINIT_FUNC PyInit_fails_header(void) { return NULL; }
