/* The OpenSSL version the module runs with, read through libssl (so the module links it). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/ssl.h>

static PyObject *openssl_version(PyObject *self, PyObject *args) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "SSL_CTX_new failed");
        return NULL;
    }
    SSL_CTX_free(ctx);
    return PyLong_FromUnsignedLong(OpenSSL_version_num());
}

static PyMethodDef methods[] = {
    {"openssl_version", openssl_version, METH_NOARGS, "The OpenSSL version number in use."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "ssl_abi3_ext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_ssl_abi3_ext(void) { return PyModule_Create(&module); }
