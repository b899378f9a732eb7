// Maps the engine's C++ exceptions onto the Python hierarchy in llamacpp_integrations.errors.
#include "bindings.h"

#include "errors.h"

#include <nanobind/stl/string.h>

namespace {

PyObject * py_error(const char * name) {
    // The classes live in Python (docstrings, multiple bases); looked up once and kept alive.
    static PyObject * errors_module = nb::module_::import_("llamacpp_integrations.errors").release().ptr();
    PyObject * cls = PyObject_GetAttrString(errors_module, name);
    Py_XDECREF(cls); // the module keeps the class alive
    return cls != nullptr ? cls : PyExc_RuntimeError;
}

} // namespace

void init_errors(nb::module_ & m) {
    // resolve eagerly so that a broken install fails at import, not at the first error
    (void) py_error("LlamaError");
    nb::register_exception_translator([](const std::exception_ptr & p, void *) {
        try {
            std::rethrow_exception(p);
        } catch (const lci::model_load_error & e) {
            PyErr_SetString(py_error("ModelLoadError"), e.what());
        } catch (const lci::grammar_error & e) {
            PyErr_SetString(py_error("GrammarError"), e.what());
        } catch (const lci::context_window_exceeded_error & e) {
            PyErr_SetString(py_error("ContextWindowExceededError"), e.what());
        } catch (const lci::decode_error & e) {
            PyErr_SetString(py_error("DecodeError"), e.what());
        } catch (const lci::invalid_argument_error & e) {
            PyErr_SetString(py_error("InvalidParameterError"), e.what());
        } catch (const lci::kv_cache_full_error & e) {
            PyErr_SetString(py_error("KVCacheFullError"), e.what());
        } catch (const lci::engine_closed_error & e) {
            PyErr_SetString(py_error("EngineClosedError"), e.what());
        } catch (const lci::llama_error & e) {
            PyErr_SetString(py_error("LlamaError"), e.what());
        }
    });
    m.def("_raise_for_test", [](const std::string & kind) {
        if (kind == "model_load") throw lci::model_load_error("test");
        if (kind == "grammar") throw lci::grammar_error("test");
        if (kind == "context") throw lci::context_window_exceeded_error("test");
        if (kind == "decode") throw lci::decode_error("test");
        if (kind == "invalid") throw lci::invalid_argument_error("test");
        if (kind == "closed") throw lci::engine_closed_error("test");
        if (kind == "kv_full") throw lci::kv_cache_full_error("test");
        throw lci::llama_error("test");
    }, "Raises the Python error that a C++ exception of the given kind maps to (for tests).");
}
