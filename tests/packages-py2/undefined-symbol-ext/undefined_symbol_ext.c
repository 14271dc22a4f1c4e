/* A C extension that calls a function no library defines: it builds and links (a shared object
   may leave symbols to the loader), and no interpreter can load it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

extern long piwheels_no_such_function(long);

static PyObject *call(PyObject *self, PyObject *args) {
    return PyLong_FromLong(piwheels_no_such_function(1));
}

static PyMethodDef methods[] = {
    {"call", call, METH_NOARGS, "Call the function no library defines."},
    {NULL, NULL, 0, NULL},
};

#if PY_MAJOR_VERSION >= 3
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "undefined_symbol_ext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_undefined_symbol_ext(void) { return PyModule_Create(&module); }
#else
PyMODINIT_FUNC initundefined_symbol_ext(void) { Py_InitModule("undefined_symbol_ext", methods); }
#endif
