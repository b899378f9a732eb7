// Routes llama.cpp's log to the Python logger "llamacpp_integrations".
#include "bindings.h"

#include "logging.h"

namespace {

PyObject * g_logger = nullptr; // kept for the life of the process

int python_level(int ggml_level) {
    switch (ggml_level) {
        case 1:  return 10; // debug
        case 2:  return 20; // info
        case 3:  return 30; // warning
        case 4:  return 40; // error
        default: return 20;
    }
}

void forward(int level, const std::string & line) {
    if (!nb::is_alive() || g_logger == nullptr || python_exiting()) {
        return; // at exit a worker thread must not take the GIL (the exit hook is past)
    }
    nb::gil_scoped_acquire gil;
    // a line cut inside a UTF-8 sequence still reaches the logger (with a replacement character)
    PyObject * text = PyUnicode_DecodeUTF8(line.data(), (Py_ssize_t) line.size(), "replace");
    PyObject * r = text == nullptr ? nullptr : PyObject_CallMethod(g_logger, "log", "iO", python_level(level), text);
    Py_XDECREF(text);
    if (r == nullptr) {
        PyErr_Clear(); // a broken handler must not break generation
    } else {
        Py_DECREF(r);
    }
}

} // namespace

void init_log(nb::module_ & m) {
    nb::object logging = nb::module_::import_("logging");
    g_logger = logging.attr("getLogger")("llamacpp_integrations").release().ptr();
    lci::log_install(forward);
    lci::log_set_min_level(0);
    m.def("set_log_level", &lci::log_set_min_level, nb::arg("min_level"),
          "Forward llama.cpp log lines at or above min_level (1 debug, 2 info, 3 warn, 4 error) to the "
          "'llamacpp_integrations' logger; 0 silences llama.cpp entirely (the default).");
    m.def("get_log_level", &lci::log_min_level, "The level set by set_log_level.");
}
