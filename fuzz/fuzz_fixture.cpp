// The harness's fixture reader (harness/fixture.cpp, read_fixture) and golden/manifest.json
// (check_manifest). Input = Parts: [manifest.json] then the bytes that choose the fixture's structure
// (h5_writer.h): root attributes, case groups with attributes and inputs/outputs/reference64 datasets.
#include "harness/fixture.h"
#include "fuzz/fuzz.h"
#include "fuzz/h5_writer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    lmlab::fuzz::Parts parts(data, size);
    const std::string_view manifest = parts.next();
    const std::string_view rest = parts.rest();
    FuzzedDataProvider in(reinterpret_cast<const std::uint8_t*>(rest.data()), rest.size());

    // scripts/ is empty, so the exporter hash is sha256("") = e3b0c442...: seeds carry it, so that
    // check_manifest gets past that check to the file list
    const std::string golden = (lmlab::fuzz::scratch_dir() / "golden").string();
    lmlab::fuzz::write_file("golden/manifest.json", manifest);
    std::filesystem::create_directories(lmlab::fuzz::scratch_dir() / "scripts");  // no *.py: the exporter hash of nothing
    const std::string path = (lmlab::fuzz::scratch_dir() / "golden" / "kernel" / "f.h5").string();
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    try {
        H5::H5File f(path, H5F_ACC_TRUNC);
        lmlab::fuzz::H5Writer w(in);
        for (const char* a : {"fixture", "level", "format_version", "exporter_sha256", "model"})
            if (in.ConsumeIntegralInRange(0, 5) != 0) w.attribute(f, a);
        const int n_cases = in.ConsumeIntegralInRange(0, 3);
        for (int c = 0; c < n_cases; ++c) {
            H5::Group g = f.createGroup(in.ConsumeBool() ? "case_00" + std::to_string(c) : in.ConsumeRandomLengthString(8) + "x");
            for (int a = in.ConsumeIntegralInRange(0, 3); a > 0; --a)
                w.attribute(g, in.PickValueInArray({"description", "pos", "layer", "compare_with", "style", "eps"}));
            for (const char* sub : {"inputs", "outputs", "reference64"}) {
                const int kind = in.ConsumeIntegralInRange(0, 4);
                if (kind == 0) continue;              // absent
                if (kind == 1) {                      // a dataset where a group belongs
                    w.dataset(g, sub);
                    continue;
                }
                H5::Group s = g.createGroup(sub);
                for (int d = in.ConsumeIntegralInRange(0, 3); d > 0; --d)
                    w.dataset(s, in.PickValueInArray({"x", "y", "logits", "tokens", "q"}) + std::to_string(d));
                if (kind == 4) s.createGroup("nested");  // a group where datasets belong
            }
        }
    } catch (const H5::Exception&) {
        return 0;  // the bytes asked for a file HDF5 will not write: not a finding
    }
    try {
        (void)lmlab::read_fixture(path);
    } catch (const lmlab::HarnessError&) {
    }
    try {
        lmlab::check_manifest(golden, (lmlab::fuzz::scratch_dir() / "scripts").string());
    } catch (const lmlab::HarnessError&) {
    }
    return 0;
}
