# Brings the pinned llama.cpp into the build as static, position-independent libraries.
#
# LLAMA_CPP_SOURCE_DIR (cache variable or environment variable) points at a local llama.cpp
# checkout; otherwise fetch.py downloads the pinned llama-cpp-python sdist with pip, verifies its
# SHA-256 and extracts vendor/llama.cpp into a cache outside the repository.

set(LLAMA_CPP_SOURCE_DIR "$ENV{LLAMA_CPP_SOURCE_DIR}" CACHE PATH
    "Local llama.cpp checkout to build against instead of the pinned source")

if(LLAMA_CPP_SOURCE_DIR)
  if(NOT EXISTS "${LLAMA_CPP_SOURCE_DIR}/include/llama.h")
    message(FATAL_ERROR
      "LLAMA_CPP_SOURCE_DIR=${LLAMA_CPP_SOURCE_DIR} is not a llama.cpp checkout "
      "(no include/llama.h). Point it at the root of a llama.cpp source tree, or unset it to "
      "build the pinned source.")
  endif()
  set(_llama_src "${LLAMA_CPP_SOURCE_DIR}")
  message(STATUS "llama.cpp source: ${_llama_src} (LLAMA_CPP_SOURCE_DIR)")
else()
  execute_process(
    COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_LIST_DIR}/fetch.py"
    OUTPUT_VARIABLE _llama_src
    OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _fetch_rc)
  if(NOT _fetch_rc EQUAL 0)
    message(FATAL_ERROR
      "Could not obtain the pinned llama.cpp source (see the error above). "
      "To build against a local checkout instead: LLAMA_CPP_SOURCE_DIR=/path/to/llama.cpp")
  endif()
  message(STATUS "llama.cpp source: ${_llama_src} (pinned, see third_party/llama.cpp/pin.json)")
endif()
set(LLAMACPP_INTEGRATIONS_ENGINE_SOURCE "${_llama_src}" CACHE INTERNAL "")

# One extension module holds everything: static, PIC, and nothing we do not link.
set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
foreach(_opt LLAMA_BUILD_TESTS LLAMA_BUILD_TOOLS LLAMA_BUILD_EXAMPLES LLAMA_BUILD_SERVER
             LLAMA_BUILD_APP LLAMA_OPENSSL LLAMA_CURL LLAMA_BUILD_UI LLAMA_USE_PREBUILT_UI)
  set(${_opt} OFF CACHE BOOL "" FORCE)
endforeach()
set(LLAMA_BUILD_COMMON ON CACHE BOOL "" FORCE)
# the multimodal library (tools/mtmd) for images in chat; no video (it would spawn ffmpeg)
set(LLAMA_BUILD_MTMD ON CACHE BOOL "" FORCE)
set(MTMD_VIDEO OFF CACHE BOOL "" FORCE)
set(GGML_BUILD_TESTS OFF CACHE BOOL "" FORCE)
set(GGML_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_NUMBER 0 CACHE STRING "" FORCE)
set(LLAMA_BUILD_COMMIT "llama-cpp-python-pin" CACHE STRING "" FORCE)

add_subdirectory("${_llama_src}" "${CMAKE_BINARY_DIR}/llama.cpp" EXCLUDE_FROM_ALL)
