// Shared by the binding files: each exposes init_<concept>(module) and only converts and
// forwards to the engine in native/engine/.
#pragma once

#include <nanobind/nanobind.h>

namespace nb = nanobind;

void init_errors(nb::module_ & m);
void init_log(nb::module_ & m);
void init_model(nb::module_ & m);
void init_engine(nb::module_ & m);
void init_chat(nb::module_ & m);
