/* A C extension that links the system's zlib, building on Python 2.7 and 3. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <zlib.h>

static PyObject *crc(PyObject *self, PyObject *args) {
    const char *data;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "s#", &data, &size)) {
        return NULL;
    }
    return PyLong_FromUnsignedLong(crc32(0L, (const Bytef *)data, (uInt)size));
}

static PyMethodDef methods[] = {
    {"crc", crc, METH_VARARGS, "The CRC-32 of a string, computed by the system's zlib."},
    {NULL, NULL, 0, NULL},
};

#if PY_MAJOR_VERSION >= 3
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "zlib_ext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_zlib_ext(void) { return PyModule_Create(&module); }
#else
PyMODINIT_FUNC initzlib_ext(void) { Py_InitModule("zlib_ext", methods); }
#endif
