// Writes an HDF5 file whose structure is chosen by the fuzzer's bytes (FuzzedDataProvider), for the
// targets of lmlab's own HDF5 readers (fuzz_hdf5_model.cpp, fuzz_fixture.cpp). Random bytes handed to
// libhdf5 would test libhdf5's parser (which lmlab trusts, see README "What lmlab checks in a file");
// a well-formed file with hostile contents tests our checks: attributes of the wrong kind or absurd
// value, datasets of any rank, type and shape, datasets that claim far more elements than they store
// (chunked, never written: the header says 2^40 floats, the file holds none), datasets stored in an
// external file (/dev/zero), strings of either kind.
#pragma once

#include <H5Cpp.h>
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace lmlab::fuzz {

class H5Writer {
public:
    explicit H5Writer(FuzzedDataProvider& in) : in_(in) { H5::Exception::dontPrint(); }

    // An attribute `name` on obj: a number (int64 or float64, small or absurd), a string (variable or
    // fixed length), a numeric array or a string array: whichever the bytes choose.
    void attribute(H5::H5Object& obj, const std::string& name) {
        const H5::DataSpace scalar(H5S_SCALAR);
        switch (in_.ConsumeIntegralInRange(0, 5)) {
            case 0: {  // a count: mostly small, sometimes anything
                const std::int64_t v = in_.ConsumeBool() ? in_.ConsumeIntegralInRange<std::int64_t>(-2, 40)
                                                         : in_.ConsumeIntegral<std::int64_t>();
                obj.createAttribute(name, H5::PredType::STD_I64LE, scalar).write(H5::PredType::NATIVE_INT64, &v);
                break;
            }
            case 1: {
                const double v = in_.ConsumeFloatingPoint<double>();  // NaN, inf, 1e300 included
                obj.createAttribute(name, H5::PredType::IEEE_F64LE, scalar).write(H5::PredType::NATIVE_DOUBLE, &v);
                break;
            }
            case 2: {
                const std::string v = in_.ConsumeRandomLengthString(40);
                H5::StrType t(H5::PredType::C_S1, H5T_VARIABLE);
                obj.createAttribute(name, t, scalar).write(t, v);
                break;
            }
            case 3: {
                const std::string v = in_.ConsumeRandomLengthString(40);
                H5::StrType t(H5::PredType::C_S1, v.empty() ? 1 : v.size());
                obj.createAttribute(name, t, scalar).write(t, v.empty() ? std::string(1, '\0') : v);
                break;
            }
            case 4: {  // several numbers
                const hsize_t n = in_.ConsumeIntegralInRange<hsize_t>(0, 4);
                std::vector<double> v(n);
                for (double& x : v) x = in_.ConsumeFloatingPoint<double>();
                obj.createAttribute(name, H5::PredType::IEEE_F64LE, H5::DataSpace(1, &n))
                    .write(H5::PredType::NATIVE_DOUBLE, v.data());
                break;
            }
            default: {  // several strings, variable or fixed length
                const hsize_t n = in_.ConsumeIntegralInRange<hsize_t>(1, 3);
                std::vector<std::string> v(n);
                for (auto& s : v) s = in_.ConsumeRandomLengthString(12);
                if (in_.ConsumeBool()) {
                    std::vector<const char*> raw;
                    for (auto& s : v) raw.push_back(s.c_str());
                    H5::StrType t(H5::PredType::C_S1, H5T_VARIABLE);
                    obj.createAttribute(name, t, H5::DataSpace(1, &n)).write(t, raw.data());
                } else {
                    const std::size_t len = 8;
                    std::string flat(len * n, '\0');
                    for (std::size_t i = 0; i < n; ++i) flat.replace(i * len, std::min(len, v[i].size()), v[i].substr(0, len));
                    H5::StrType t(H5::PredType::C_S1, len);
                    obj.createAttribute(name, t, H5::DataSpace(1, &n)).write(t, flat.data());
                }
            }
        }
    }

    // A dataset `name` under loc: float32, float64, int64, uint8 or strings, rank 0..3, each dim
    // 0..7 or `fitting` (a dimension the reader may expect), or a chunked dataset of up to 2^40
    // elements that stores nothing.
    void dataset(H5::Group& loc, const std::string& name, std::vector<hsize_t> fitting = {}) {
        std::vector<hsize_t> dims;
        if (!fitting.empty() && in_.ConsumeBool()) {
            dims = fitting;
        } else {
            const int rank = in_.ConsumeIntegralInRange(0, 3);
            for (int i = 0; i < rank; ++i) dims.push_back(in_.ConsumeIntegralInRange<hsize_t>(0, 7));
        }
        const int kind = in_.ConsumeIntegralInRange(0, 6);
        if (kind == 6) {  // data "stored" in another file: a header may point at /dev/zero with any extent
            std::vector<hsize_t> ext = dims.empty() ? std::vector<hsize_t>{1} : dims;
            if (in_.ConsumeBool()) ext[0] = hsize_t{1} << in_.ConsumeIntegralInRange(20, 30);
            H5::DSetCreatPropList plist;
            plist.setExternal("/dev/zero", 0, H5F_UNLIMITED);
            loc.createDataSet(name, H5::PredType::IEEE_F32LE, H5::DataSpace(static_cast<int>(ext.size()), ext.data()), plist);
            return;
        }
        if (kind == 5) {  // claims a huge extent, stores no data
            std::vector<hsize_t> huge = dims.empty() ? std::vector<hsize_t>{1} : dims;
            huge[0] = hsize_t{1} << in_.ConsumeIntegralInRange(20, 40);
            std::vector<hsize_t> chunk(huge.size(), 1);
            H5::DSetCreatPropList plist;
            plist.setChunk(static_cast<int>(chunk.size()), chunk.data());
            loc.createDataSet(name, H5::PredType::IEEE_F32LE, H5::DataSpace(static_cast<int>(huge.size()), huge.data()), plist);
            return;
        }
        const H5::DataSpace space = dims.empty() ? H5::DataSpace(H5S_SCALAR)
                                                 : H5::DataSpace(static_cast<int>(dims.size()), dims.data());
        hsize_t n = 1;
        for (hsize_t d : dims) n *= d;
        if (kind == 4) {  // variable-length strings where numbers belong
            std::vector<std::string> v(n);
            std::vector<const char*> raw;
            for (auto& s : v) {
                s = in_.ConsumeRandomLengthString(8);
                raw.push_back(s.c_str());
            }
            H5::StrType t(H5::PredType::C_S1, H5T_VARIABLE);
            H5::DataSet ds = loc.createDataSet(name, t, space);
            if (n) ds.write(raw.data(), t);
            return;
        }
        std::vector<double> v(n);
        for (double& x : v) x = in_.ConsumeBool() ? in_.ConsumeFloatingPointInRange(-4.0, 4.0) : in_.ConsumeFloatingPoint<double>();
        const H5::PredType* file_type[] = {&H5::PredType::IEEE_F32LE, &H5::PredType::IEEE_F64LE, &H5::PredType::STD_I64LE,
                                           &H5::PredType::STD_U8LE};
        H5::DataSet ds = loc.createDataSet(name, *file_type[kind], space);
        if (n == 0) return;
        if (kind >= 2) {  // integers: convert ourselves (HDF5's float-to-int conversion of NaN is not what we test)
            std::vector<std::int64_t> iv(n);
            for (hsize_t i = 0; i < n; ++i)
                iv[i] = std::isfinite(v[i]) && std::abs(v[i]) < 9e18 ? static_cast<std::int64_t>(v[i]) : 0;
            if (kind == 3)
                for (auto& x : iv) x &= 0xff;
            ds.write(iv.data(), H5::PredType::NATIVE_INT64);
        } else {
            ds.write(v.data(), H5::PredType::NATIVE_DOUBLE);
        }
    }

private:
    FuzzedDataProvider& in_;
};

}  // namespace lmlab::fuzz
