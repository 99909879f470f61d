// The one check that a checksum manifest's entry describes a file's header: the same tensors in
// the same order, each tiled exactly by its ranges. Used by verify_checksums and by verified
// loads, so a damaged manifest cannot pass by naming the wrong bytes in either.
#pragma once

#include "format/manifest.hpp"
#include "quicksave/safetensors.hpp"

namespace quicksave::read {

// Throws Error(corrupt) saying what differs ("a different number of tensors", "ranges that do
// not tile tensor w", "tensor a where the header has b").
void check_manifest_tiles_header(const format::ManifestFile& entry, const Header& header);

}  // namespace quicksave::read
