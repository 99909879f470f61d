// DistributedCheckpointer: plans a save collectively (Gloo group, at save_async) and hands the
// engine a StoreCoordinator (c10d Store, at commit time). The only file of src/dist that includes
// LibTorch/c10d.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <cstring>
#include <set>

#include "commit/file_system.hpp"
#include "dist/assignment.hpp"
#include "engine/checkpointer_access.hpp"
#include "dist/store_coordinator.hpp"
#include "io/backend.hpp"
#include "plan/save_plan.hpp"
#include "plan/shared_tensors.hpp"
#include "quicksave/dist.hpp"
#include "quicksave/error.hpp"

namespace quicksave {
namespace {

// KeyValueStore over a c10d::Store.
class C10dStore : public dist::KeyValueStore {
 public:
  explicit C10dStore(c10::intrusive_ptr<c10d::Store> store) : store_(std::move(store)) {}
  void set(const std::string& key, const std::string& value) override {
    store_->set(key, std::vector<std::uint8_t>(value.begin(), value.end()));
  }
  std::optional<std::string> try_get(const std::string& key) override {
    if (!store_->check({key})) return std::nullopt;
    const auto bytes = store_->get(key);
    return std::string(bytes.begin(), bytes.end());
  }
  std::string set_if_absent(const std::string& key, const std::string& value) override {
    const auto bytes = store_->compareSet(key, {}, std::vector<std::uint8_t>(value.begin(), value.end()));
    return std::string(bytes.begin(), bytes.end());
  }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
};

// --- a small binary encoding for the plan exchange -------------------------------------------

void put_u64(std::string& out, std::uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }
void put_string(std::string& out, const std::string& s) {
  put_u64(out, s.size());
  out += s;
}

class Reader {
 public:
  explicit Reader(const std::string& bytes) : bytes_(bytes) {}
  std::uint64_t u64() {
    need(8);
    std::uint64_t v;
    std::memcpy(&v, bytes_.data() + at_, 8);
    at_ += 8;
    return v;
  }
  std::string string() {
    const auto n = u64();
    need(n);
    std::string s = bytes_.substr(at_, n);
    at_ += n;
    return s;
  }

 private:
  void need(std::uint64_t n) const {
    if (at_ + n > bytes_.size()) throw Error(ErrorCode::corrupt, "malformed plan message from another rank");
  }
  const std::string& bytes_;
  std::size_t at_ = 0;
};

// What a rank tells the others in the partitioned layout: its kept tensors and its aliases.
std::string encode_local(const std::vector<TensorRef>& kept, const std::vector<std::pair<std::string, std::string>>& aliases) {
  std::string out;
  put_u64(out, kept.size());
  for (const auto& t : kept) {
    put_string(out, t.name);
    put_u64(out, static_cast<std::uint64_t>(t.dtype));
    put_u64(out, t.shape.size());
    for (const auto d : t.shape) put_u64(out, static_cast<std::uint64_t>(d));
  }
  put_u64(out, aliases.size());
  for (const auto& [alias, kept_name] : aliases) {
    put_string(out, alias);
    put_string(out, kept_name);
  }
  return out;
}

std::uint64_t fnv1a(const std::string& bytes, std::uint64_t h = 1469598103934665603ull) {
  for (const unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::shared_ptr<::gloo::transport::Device> gloo_device() {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME")) return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  try {
    return c10d::ProcessGroupGloo::createDefaultDevice();
  } catch (const std::exception&) {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
}

}  // namespace

struct DistributedCheckpointer::Impl {
  Impl(c10::intrusive_ptr<c10d::Store> store_in, int rank_in, int world_in, std::unique_ptr<Checkpointer> checkpointer_in,
       DistributedOptions options_in)
      : store(std::move(store_in)),
        rank(rank_in),
        world(world_in),
        options(std::move(options_in)),
        checkpointer(std::move(checkpointer_in)) {
    if (!checkpointer) throw Error(ErrorCode::invalid_argument, "DistributedCheckpointer: null checkpointer");
    if (world < 1 || rank < 0 || rank >= world) {
      throw Error(ErrorCode::invalid_argument, "rank " + std::to_string(rank) + " is not in a world of " + std::to_string(world));
    }
    auto pg_options = c10d::ProcessGroupGloo::Options::create(options.timeout);
    pg_options->devices.push_back(gloo_device());
    group = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>(options.name + "/gloo", store), rank,
                                                        world, pg_options);
    kv = std::make_shared<C10dStore>(c10::make_intrusive<c10d::PrefixStore>(options.name + "/commit", store));
  }

  // Every rank's bytes, in rank order (two Gloo allgathers: sizes, then padded payloads).
  std::vector<std::string> allgather(const std::string& mine) {
    auto size = torch::tensor({static_cast<std::int64_t>(mine.size())}, torch::kLong);
    std::vector<std::vector<torch::Tensor>> sizes(1);
    for (int r = 0; r < world; ++r) sizes[0].push_back(torch::empty({1}, torch::kLong));
    std::vector<torch::Tensor> size_in{size};
    group->allgather(sizes, size_in)->wait();
    std::int64_t longest = 0;
    for (const auto& s : sizes[0]) longest = std::max(longest, s.item<std::int64_t>());
    auto payload = torch::zeros({std::max<std::int64_t>(longest, 1)}, torch::kByte);
    std::memcpy(payload.data_ptr(), mine.data(), mine.size());
    std::vector<std::vector<torch::Tensor>> payloads(1);
    for (int r = 0; r < world; ++r) payloads[0].push_back(torch::empty_like(payload));
    std::vector<torch::Tensor> payload_in{payload};
    group->allgather(payloads, payload_in)->wait();
    std::vector<std::string> out;
    for (int r = 0; r < world; ++r) {
      const auto n = static_cast<std::size_t>(sizes[0][r].item<std::int64_t>());
      out.emplace_back(static_cast<const char*>(payloads[0][r].data_ptr()), n);
    }
    return out;
  }

  c10::intrusive_ptr<c10d::Store> store;
  int rank;
  int world;
  DistributedOptions options;
  std::unique_ptr<Checkpointer> checkpointer;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  std::shared_ptr<dist::KeyValueStore> kv;
  std::uint64_t saves = 0;
};

DistributedCheckpointer::DistributedCheckpointer(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size,
                                                 CheckpointerOptions checkpointer_options, DistributedOptions options)
    : DistributedCheckpointer(std::move(store), rank, world_size, std::make_unique<Checkpointer>(checkpointer_options), std::move(options)) {}

DistributedCheckpointer::DistributedCheckpointer(c10::intrusive_ptr<c10d::Store> store, int rank, int world_size,
                                                 std::unique_ptr<Checkpointer> checkpointer, DistributedOptions options)
    : impl_(std::make_unique<Impl>(std::move(store), rank, world_size, std::move(checkpointer), std::move(options))) {}

DistributedCheckpointer::~DistributedCheckpointer() = default;

std::unique_ptr<DistributedCheckpointer> DistributedCheckpointer::from_env(CheckpointerOptions checkpointer_options,
                                                                           DistributedOptions options) {
  const auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') {
      throw Error(ErrorCode::invalid_argument, std::string(name) + " is not set (launch with torchrun or set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)");
    }
    return v;
  };
  const int rank = std::stoi(env("RANK"));
  const int world = std::stoi(env("WORLD_SIZE"));
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(std::stoi(env("MASTER_PORT")));
  store_options.isServer = rank == 0;
  store_options.numWorkers = static_cast<std::size_t>(world);
  store_options.waitWorkers = false;
  store_options.timeout = options.timeout;
  store_options.multiTenant = true;
  auto store = c10::make_intrusive<c10d::TCPStore>(env("MASTER_ADDR"), store_options);
  return std::make_unique<DistributedCheckpointer>(std::move(store), rank, world, checkpointer_options, std::move(options));
}

SaveHandle DistributedCheckpointer::save_async(const StateDict& local, const std::filesystem::path& directory,
                                               const SaveOptions& options) {
  Impl& d = *impl_;
  const std::uint64_t chunk_bytes = d.checkpointer->options().chunk_bytes;
  std::vector<TensorRef> refs = to_tensor_refs(local);
  plan::SavePlan plan;
  engine::Assignment assignment;
  std::vector<int> file_owner;
  if (d.options.layout == DistributedLayout::replicated) {
    plan = plan::make_save_plan(std::move(refs), options, chunk_bytes);
    // Every rank must have planned the same files: compare a digest of the headers and index.
    std::string digest_input = plan.index_json;
    for (const auto& f : plan.files) digest_input += f.filename + f.header;
    const auto digests = d.allgather(std::to_string(fnv1a(digest_input)));
    for (int r = 0; r < d.world; ++r) {
      if (digests[r] != digests[0]) {
        throw Error(ErrorCode::invalid_argument, "replicated layout: rank " + std::to_string(r) +
                                                     " holds a different state dict than rank 0 (names, dtypes, shapes or options differ)");
      }
    }
    file_owner = dist::replicated_file_ranks(plan, d.world);
    assignment = dist::assign_replicated(plan, d.rank, d.world);
  } else {
    const plan::DedupResult local_dedup = plan::remove_duplicate_names(refs, options.shared_tensors_to_discard);
    std::vector<TensorRef> kept;
    for (const std::size_t i : local_dedup.kept) kept.push_back(refs[i]);
    const auto messages = d.allgather(encode_local(kept, local_dedup.aliases));
    std::vector<TensorRef> global;
    std::vector<int> tensor_rank;
    SaveOptions global_options = options;
    for (int r = 0; r < d.world; ++r) {
      Reader in(messages[r]);
      const auto count = in.u64();
      for (std::uint64_t i = 0; i < count; ++i) {
        TensorRef t;
        t.name = in.string();
        t.dtype = static_cast<DType>(in.u64());
        const auto rank_dims = in.u64();
        for (std::uint64_t k = 0; k < rank_dims; ++k) t.shape.push_back(static_cast<std::int64_t>(in.u64()));
        if (r == d.rank) t = kept[i];  // our own: the real tensor (same name, dtype, shape)
        global.push_back(std::move(t));
        tensor_rank.push_back(r);
      }
      const auto alias_count = in.u64();
      std::vector<std::pair<std::string, std::string>> aliases;
      for (std::uint64_t i = 0; i < alias_count; ++i) {
        std::string alias = in.string();
        aliases.emplace_back(std::move(alias), in.string());
      }
      plan::add_alias_metadata(global_options.metadata, aliases);
    }
    plan = plan::make_save_plan(std::move(global), global_options, chunk_bytes, /*remote_tensors_allowed=*/true);
    // make_save_plan keeps the order; plan.tensors[i] is global[i] (nothing more to de-duplicate).
    if (plan.tensors.size() != tensor_rank.size()) {
      throw Error(ErrorCode::invalid_argument, "partitioned layout: the same tensor appears on several ranks");
    }
    file_owner = dist::partitioned_file_owners(plan, tensor_rank);
    assignment = dist::assign_partitioned(plan, tensor_rank, d.rank);
  }
  dist::CoordinatorConfig config;
  config.store = d.kv;
  config.prefix = "save/" + std::to_string(d.saves++);
  config.rank = d.rank;
  config.world_size = d.world;
  config.timeout = d.options.timeout;
  config.file_owner = std::move(file_owner);
  auto coordinator = dist::make_store_coordinator(std::move(config), std::move(assignment));
  return CheckpointerAccess::submit(*d.checkpointer, std::move(plan), directory, options, std::move(coordinator));
}

SaveResult DistributedCheckpointer::save(const StateDict& local, const std::filesystem::path& directory, const SaveOptions& options) {
  return save_async(local, directory, options).committed().get();
}

int DistributedCheckpointer::rank() const { return impl_->rank; }
int DistributedCheckpointer::world_size() const { return impl_->world; }
Checkpointer& DistributedCheckpointer::checkpointer() { return *impl_->checkpointer; }

std::function<bool(const std::string&)> keys_of(const torch::nn::Module& model) {
  auto keys = std::make_shared<std::set<std::string>>();
  for (const auto& item : module_state_dict(model)) keys->insert(item.key());
  return [keys](const std::string& key) { return keys->count(key) > 0; };
}

}  // namespace quicksave
