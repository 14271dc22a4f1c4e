/* A C extension that links the system's libyaml, a library outside every manylinux policy. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <yaml.h>

static PyObject *version(PyObject *self, PyObject *args) {
    return Py_BuildValue("s", yaml_get_version_string());
}

static PyMethodDef methods[] = {
    {"version", version, METH_NOARGS, "The version of the libyaml it runs with."},
    {NULL, NULL, 0, NULL},
};

#if PY_MAJOR_VERSION >= 3
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "yaml_ext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_yaml_ext(void) { return PyModule_Create(&module); }
#else
PyMODINIT_FUNC inityaml_ext(void) { Py_InitModule("yaml_ext", methods); }
#endif
