// Loads the golden vectors copied from shared/reference/golden/ into tests/data/.
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <stdexcept>
#include <string>

namespace quicksave::testing {

inline nlohmann::ordered_json load_golden(const std::string& file) {
  const std::string path = std::string(QUICKSAVE_TEST_DATA_DIR) + "/" + file;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open golden file " + path);
  return nlohmann::ordered_json::parse(in);
}

}  // namespace quicksave::testing
