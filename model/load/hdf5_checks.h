// Checks lmlab makes on an HDF5 dataset before reading it, shared by the model loader
// (model/load/hdf5.cpp) and the fixture reader (harness/fixture.cpp). What these files can still do
// to us is libhdf5's business (README "What lmlab checks in a file before trusting it"); what they
// claim, we check: a dataset's header may announce 2^40 elements while the file stores none (a
// chunked dataset never written reads back as fill values), so the element count is checked against
// the bytes actually stored before anything is allocated.
#pragma once

#include <H5Cpp.h>

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace lmlab {

// The dataset's dims and element count, or nullopt with `why` set when the count overflows or the
// file stores fewer bytes than the count of elements of its stored type needs.
inline std::optional<std::vector<std::size_t>> checked_dims(const H5::DataSet& ds, std::string& why) {
    // Only data stored in this file: an external-storage dataset reports the size its header declares
    // and reads any local file (/dev/zero, ...); a virtual dataset maps other files. lmlab writes neither.
    const H5::DSetCreatPropList plist = ds.getCreatePlist();
    const H5D_layout_t layout = plist.getLayout();
    if ((layout != H5D_CONTIGUOUS && layout != H5D_CHUNKED && layout != H5D_COMPACT) ||
        H5Pget_external_count(plist.getId()) != 0) {
        why = "its data is not stored in this file (external or virtual storage), which lmlab never writes";
        return std::nullopt;
    }
    const H5::DataSpace space = ds.getSpace();
    const int rank = space.getSimpleExtentNdims();
    std::vector<hsize_t> hdims(static_cast<std::size_t>(rank > 0 ? rank : 0));
    if (rank > 0) space.getSimpleExtentDims(hdims.data());
    std::vector<std::size_t> dims;
    std::size_t n = 1;
    for (hsize_t d : hdims) {
        if (__builtin_mul_overflow(n, static_cast<std::size_t>(d), &n)) {
            why = "its dimensions multiply past 2^64 elements";
            return std::nullopt;
        }
        dims.push_back(static_cast<std::size_t>(d));
    }
    const std::size_t elem = ds.getDataType().getSize();
    std::size_t need = 0;
    if (__builtin_mul_overflow(n, elem, &need) || ds.getStorageSize() < need) {
        why = "it claims " + std::to_string(n) + " elements of " + std::to_string(elem) + " bytes but the file stores " +
              std::to_string(ds.getStorageSize()) + " bytes of it (lmlab writes datasets uncompressed and whole)";
        return std::nullopt;
    }
    return dims;
}

}  // namespace lmlab
