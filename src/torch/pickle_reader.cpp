// Reads the zip archives torch.save writes (PyTorch >= 1.6's default format) as a state dict,
// with a zip reader and a small pickle machine of our own (src/format: no LibTorch, fuzzed).
// LibTorch 1.13's C++ unpickler cannot rebuild collections.OrderedDict (what torch.save(model.state_dict()) holds) nor single-entry dicts
// (SETITEM), so it fails on most .bin checkpoints that Python writes; its archive reader
// allocates whatever size an entry declares.
//
// Only what a state dict of tensors needs is understood: dicts, lists, tuples, scalars, strings,
// collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the typed
// storage classes. Any other global is refused (as torch.load(weights_only=True) does), so a
// checkpoint cannot run code. Storages shared between tensors stay shared.
#include "torch/pickle_reader.hpp"

#include <map>

#include "format/torch_pickle.hpp"
#include "format/zip_directory.hpp"
#include "io/regular_file.hpp"
#include "quicksave/error.hpp"

namespace quicksave::torch_pickle {
namespace {

// data.pkl of a state dict is small (about 100 bytes per tensor): a larger one is refused before
// it is read, as safetensors headers over 100 MB are.
constexpr std::uint64_t kMaxPickleBytes = 100'000'000;

Error corrupt(const std::string& path, const std::string& why) {
  return Error(ErrorCode::corrupt, "cannot read the pickle checkpoint " + path + ": " + why);
}

at::ScalarType storage_dtype(const std::string& name) {
  static const std::map<std::string, at::ScalarType> table{
      {"FloatStorage", at::kFloat},      {"DoubleStorage", at::kDouble},        {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16}, {"LongStorage", at::kLong},           {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort},      {"CharStorage", at::kChar},            {"ByteStorage", at::kByte},
      {"BoolStorage", at::kBool},        {"ComplexFloatStorage", at::kComplexFloat}, {"ComplexDoubleStorage", at::kComplexDouble}};
  return table.at(name);  // format::parse_torch_pickle accepts only these names
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> read_state_dict(const std::filesystem::path& path) {
  const io::RegularFile file = io::RegularFile::open(path);
  format::ZipDirectory zip;
  format::PickleStateDict dict;
  try {
    zip = format::read_zip_directory(file.size(), [&](std::uint64_t offset, std::size_t n) { return file.read_string(offset, n); });
  } catch (const Error& e) {
    if (e.code() != ErrorCode::corrupt) throw;
    throw corrupt(path.string(), std::string(e.what()) + " (torch.save zip archives are read; the legacy pre-1.6 format is not)");
  }
  const format::ZipEntry* program = zip.find("data.pkl");
  if (program == nullptr) throw corrupt(path.string(), "the archive has no " + zip.prefix + "data.pkl");
  if (program->size > kMaxPickleBytes) {
    throw corrupt(path.string(), "data.pkl has " + std::to_string(program->size) + " bytes, the limit is " + std::to_string(kMaxPickleBytes));
  }
  try {
    dict = format::parse_torch_pickle(file.read_string(program->data_offset, static_cast<std::size_t>(program->size)));
  } catch (const Error& e) {
    if (e.code() != ErrorCode::corrupt) throw;
    throw corrupt(path.string(), e.what());
  }
  // Every storage's declared size is checked against its archive entry before anything is
  // allocated: the entry's size is real (read_zip_directory checked it against the file).
  std::vector<c10::Storage> storages;
  for (const auto& s : dict.storages) {
    const format::ZipEntry* entry = zip.find("data/" + s.key);
    if (entry == nullptr) throw corrupt(path.string(), "storage " + s.key + " has no archive entry " + zip.prefix + "data/" + s.key);
    if (entry->size < s.nbytes()) {
      throw corrupt(path.string(), "storage " + s.key + " declares " + std::to_string(s.numel) + " " + s.type + " (" +
                                       std::to_string(s.nbytes()) + " bytes) but its archive entry holds " + std::to_string(entry->size) +
                                       " bytes");
    }
    auto bytes = at::empty({static_cast<std::int64_t>(s.nbytes())}, at::TensorOptions().dtype(at::kByte));
    if (s.nbytes() > 0) file.read_exact(bytes.data_ptr(), static_cast<std::size_t>(s.nbytes()), entry->data_offset);
    storages.push_back(bytes.storage());
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.reserve(dict.entries.size());
  for (auto& [name, record] : dict.entries) {
    const auto& s = dict.storages[record.storage];
    auto t = at::empty({0}, at::TensorOptions().dtype(storage_dtype(s.type)));
    // Storages shared between tensors stay shared; the extent was checked by the parser.
    t.set_(storages[record.storage], record.offset, record.sizes, record.strides);
    out.emplace_back(std::move(name), std::move(t));
  }
  return out;
}

}  // namespace quicksave::torch_pickle
