/* A C extension that calls a C function through the system's libffi, building on Python 2.7
   (plain) and 3 (the limited API: an abi3 wheel). */
#include <Python.h>
#include <ffi.h>

static int add(int a, int b) { return a + b; }

static PyObject *call_add(PyObject *self, PyObject *args) {
    int a, b, result;
    ffi_cif cif;
    ffi_type *types[2] = {&ffi_type_sint, &ffi_type_sint};
    void *values[2];
    ffi_arg returned;
    if (!PyArg_ParseTuple(args, "ii", &a, &b)) {
        return NULL;
    }
    if (ffi_prep_cif(&cif, FFI_DEFAULT_ABI, 2, &ffi_type_sint, types) != FFI_OK) {
        PyErr_SetString(PyExc_RuntimeError, "ffi_prep_cif failed");
        return NULL;
    }
    values[0] = &a;
    values[1] = &b;
    ffi_call(&cif, FFI_FN(add), &returned, values);
    result = (int)returned;
    return PyLong_FromLong(result);
}

static PyMethodDef methods[] = {
    {"call_add", call_add, METH_VARARGS, "a + b, computed by a call through libffi."},
    {NULL, NULL, 0, NULL},
};

#if PY_MAJOR_VERSION >= 3
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "ffi_abi3_ext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_ffi_abi3_ext(void) { return PyModule_Create(&module); }
#else
PyMODINIT_FUNC initffi_abi3_ext(void) { Py_InitModule("ffi_abi3_ext", methods); }
#endif
