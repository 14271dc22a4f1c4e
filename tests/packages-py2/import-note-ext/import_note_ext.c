/* A C extension that loads, and whose init imports a Python module that is not installed: the
   ImportError a user without that dependency gets, raised by the module's own init. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyMethodDef methods[] = {{NULL, NULL, 0, NULL}};

#if PY_MAJOR_VERSION >= 3
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "import_note_ext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_import_note_ext(void) {
    PyObject *dependency = PyImport_ImportModule("piwheels_missing_dependency");
    if (dependency == NULL) {
        return NULL;
    }
    Py_DECREF(dependency);
    return PyModule_Create(&module);
}
#else
PyMODINIT_FUNC initimport_note_ext(void) {
    PyObject *dependency = PyImport_ImportModule("piwheels_missing_dependency");
    if (dependency == NULL) {
        return;
    }
    Py_DECREF(dependency);
    Py_InitModule("import_note_ext", methods);
}
#endif
