// Projector: the vision projector (llama.cpp's mtmd) loaded beside a model (native/engine/vision.h).
#include "bindings.h"

#include "model.h"
#include "vision.h"

#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>

void init_vision(nb::module_ & m) {
    nb::class_<lci::projector>(m, "Projector",
                               "A vision projector (mmproj GGUF) for a model: images in chat messages.")
        .def_static(
            "load",
            [](std::shared_ptr<lci::model> model, std::string path, int32_t n_threads, bool use_gpu, int64_t max_pixels) {
                lci::projector_params p;
                p.path = std::move(path);
                p.n_threads = n_threads;
                p.use_gpu = use_gpu;
                p.max_pixels = max_pixels;
                gil_release release;
                return lci::projector::load(std::move(model), p);
            },
            nb::arg("model"), nb::arg("path"), nb::kw_only(), nb::arg("n_threads") = -1, nb::arg("use_gpu") = true,
            nb::arg("max_pixels") = 50000000,
            "Loads the projector for model; raises ModelLoadError naming the cause (missing file, not a "
            "projector, an embedding width other than the model's).")
        .def_prop_ro("path", [](const lci::projector & p) { return p.params().path; })
        .def_prop_ro("max_pixels", [](const lci::projector & p) { return p.params().max_pixels; })
        .def_prop_ro("supports_vision", &lci::projector::supports_vision);
}
