// Model: loading (with progress and cancellation), vocabulary and metadata.
#include "bindings.h"

#include "drafts.h"
#include "model.h"

#include <nanobind/stl/map.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <memory>

namespace {

std::shared_ptr<lci::model> load_model(const std::string & path, int32_t n_gpu_layers, int32_t main_gpu,
                                       std::vector<float> tensor_split, bool use_mmap, bool use_mlock,
                                       bool vocab_only, bool check_tensors,
                                       std::vector<std::pair<std::string, float>> lora, nb::object progress) {
    lci::model_params p;
    p.path          = path;
    p.n_gpu_layers  = n_gpu_layers;
    p.main_gpu      = main_gpu;
    p.tensor_split  = std::move(tensor_split);
    p.use_mmap      = use_mmap;
    p.use_mlock     = use_mlock;
    p.vocab_only    = vocab_only;
    p.check_tensors = check_tensors;
    for (auto & [lora_path, scale] : lora) {
        p.lora.push_back({lora_path, scale});
    }

    std::unique_ptr<nb::python_error> callback_error;
    lci::progress_fn fn;
    if (!progress.is_none()) {
        fn = [&](float value) -> bool {
            park_if_exiting();
            nb::gil_scoped_acquire gil;
            try {
                nb::object r = progress(value);
                return r.is_none() || nb::cast<bool>(r);
            } catch (nb::python_error & e) {
                callback_error = std::make_unique<nb::python_error>(std::move(e));
                return false;
            } catch (const std::exception &) {
                return false;
            }
        };
    }
    std::shared_ptr<lci::model> m;
    try {
        gil_release release;
        m = lci::model::load(p, fn);
    } catch (...) {
        if (callback_error) {
            throw std::move(*callback_error); // the callback's own exception wins
        }
        throw;
    }
    return m;
}

} // namespace

void init_model(nb::module_ & m) {
    nb::class_<lci::model>(m, "Model", "A loaded GGUF model (weights, vocabulary, metadata).", nb::is_weak_referenceable())
        .def_static("load", &load_model, nb::arg("path"), nb::arg("n_gpu_layers") = 0, nb::arg("main_gpu") = 0,
                    nb::arg("tensor_split") = std::vector<float>{}, nb::arg("use_mmap") = true,
                    nb::arg("use_mlock") = false, nb::arg("vocab_only") = false, nb::arg("check_tensors") = false,
                    nb::arg("lora") = std::vector<std::pair<std::string, float>>{}, nb::arg("progress") = nb::none(),
                    nb::sig("def load(path: str, n_gpu_layers: int = 0, main_gpu: int = 0, "
                            "tensor_split: collections.abc.Sequence[float] = [], use_mmap: bool = True, "
                            "use_mlock: bool = False, vocab_only: bool = False, check_tensors: bool = False, "
                            "lora: collections.abc.Sequence[tuple[str, float]] = [], "
                            "progress: collections.abc.Callable[[float], bool | None] | None = None) -> Model"),
                    "Loads a GGUF file. progress(fraction) may return False to cancel; its exceptions propagate.")
        .def_prop_ro("n_vocab", &lci::model::n_vocab)
        .def_prop_ro("token_bos", &lci::model::bos)
        .def_prop_ro("token_eos", &lci::model::eos)
        .def_prop_ro("token_eot", &lci::model::eot)
        .def_prop_ro("token_nl", &lci::model::nl)
        .def_prop_ro("token_fim_pre", [](const lci::model & self) { return llama_vocab_fim_pre(self.vocab()); })
        .def_prop_ro("token_fim_suf", [](const lci::model & self) { return llama_vocab_fim_suf(self.vocab()); })
        .def_prop_ro("token_fim_mid", [](const lci::model & self) { return llama_vocab_fim_mid(self.vocab()); })
        .def_prop_ro("add_bos", &lci::model::add_bos)
        .def_prop_ro("add_eos", &lci::model::add_eos)
        .def("is_eog", &lci::model::is_eog, nb::arg("token"))
        .def("is_control", &lci::model::is_control, nb::arg("token"))
        .def("tokenize", &lci::model::tokenize, nb::arg("text"), nb::arg("add_special") = true,
             nb::arg("parse_special") = false, nb::call_guard<gil_release>(),
             "UTF-8 text to token ids.")
        .def("detokenize",
             [](const lci::model & self, const std::vector<llama_token> & tokens, bool remove_special,
                bool unparse_special) {
                 std::string s;
                 {
                     gil_release release;
                     s = self.detokenize(tokens, remove_special, unparse_special);
                 }
                 return nb::bytes(s.data(), s.size());
             },
             nb::arg("tokens"), nb::arg("remove_special") = false, nb::arg("unparse_special") = false,
             "Token ids to bytes (a prefix may end inside a UTF-8 character).")
        .def("token_to_piece",
             [](const lci::model & self, llama_token token, bool special) {
                 const std::string s = self.token_to_piece(token, special);
                 return nb::bytes(s.data(), s.size());
             },
             nb::arg("token"), nb::arg("special") = false)
        .def_prop_ro("description", &lci::model::description)
        .def_prop_ro("architecture", &lci::model::architecture)
        .def_prop_ro("n_ctx_train", &lci::model::n_ctx_train)
        .def_prop_ro("n_embd", &lci::model::n_embd)
        .def_prop_ro("n_layer", &lci::model::n_layer)
        .def_prop_ro("size", &lci::model::size, "Size of the weights in bytes.")
        .def_prop_ro("n_params", &lci::model::n_params)
        .def_prop_ro("has_encoder", &lci::model::has_encoder)
        .def_prop_ro("has_decoder", &lci::model::has_decoder)
        .def_prop_ro("is_recurrent", &lci::model::is_recurrent)
        .def_prop_ro("vocab_only", [](const lci::model & self) { return self.params().vocab_only; })
        .def_prop_ro("path", [](const lci::model & self) { return self.params().path; })
        .def("metadata", &lci::model::metadata, "The GGUF key/value pairs, values as strings.")
        .def("vocab_mismatch", [](const lci::model & self, const lci::model & other) { return lci::vocab_mismatch(self, other); },
             nb::arg("other"),
             "Why other cannot draft for this model (a differing tokenizer type, size, token text, BOS or "
             "EOS), or '' when its vocabulary matches.")
        .def("chat_template", &lci::model::chat_template, nb::arg("name") = "",
             "The GGUF's chat template (a named one if name is given); '' when there is none.");

    m.def("system_info", &lci::system_info, "llama.cpp's system info line (CPU features, BLAS, backends).");
    m.def("backend_names", &lci::backend_names, "Names of the registered ggml backends.");
    m.def("supports_gpu_offload", &lci::supports_gpu_offload);
    m.def("supports_mmap", &lci::supports_mmap);
    m.def("supports_mlock", &lci::supports_mlock);
    m.def("ggml_type_from_name", [](const std::string & name) -> int32_t {
        for (int32_t t = 0; t < GGML_TYPE_COUNT; ++t) {
            const char * n = ggml_type_name((ggml_type) t);
            if (n != nullptr && ggml_type_size((ggml_type) t) != 0 && name == n) {
                return t;
            }
        }
        return -1;
    }, nb::arg("name"), "The ggml_type id of a type name such as 'f16' or 'q8_0'; -1 if unknown.");
}
