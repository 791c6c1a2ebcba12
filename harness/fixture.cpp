#include "harness/fixture.h"

#include <H5Cpp.h>
#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/load/hdf5_checks.h"

namespace lmlab {

namespace fs = std::filesystem;

namespace {

constexpr long kFormatVersion = 1;  // must equal FORMAT_VERSION in scripts/export_golden.py


// Reads every attribute of an object into numbers/strings; string arrays are joined by ','.
void read_attributes(const H5::H5Object& obj, std::map<std::string, double>& numbers,
                     std::map<std::string, std::string>& strings) {
    const int n = obj.getNumAttrs();
    for (int i = 0; i < n; ++i) {
        H5::Attribute attr = obj.openAttribute(static_cast<unsigned>(i));
        const std::string name = attr.getName();
        const H5T_class_t cls = attr.getTypeClass();
        const hssize_t count = attr.getSpace().getSimpleExtentNpoints();
        if (cls == H5T_STRING) {
            H5::StrType type = attr.getStrType();
            if (count == 1) {
                std::string value;
                attr.read(type, value);
                strings[name] = value;
            } else if (type.isVariableStr()) {
                std::vector<char*> raw(static_cast<std::size_t>(count));
                attr.read(type, raw.data());
                std::string joined;
                for (std::size_t k = 0; k < raw.size(); ++k) {
                    if (k) joined += ",";
                    if (raw[k]) joined += raw[k];
                }
                H5Dvlen_reclaim(type.getId(), attr.getSpace().getId(), H5P_DEFAULT, raw.data());
                strings[name] = joined;
            } else {  // fixed-length strings: count slots of `len` bytes each, NUL-padded
                const std::size_t len = type.getSize();
                std::string flat(len * static_cast<std::size_t>(count), '\0');
                attr.read(type, flat.data());
                std::string joined;
                for (std::size_t k = 0; k < static_cast<std::size_t>(count); ++k) {
                    if (k) joined += ",";
                    const std::string slot = flat.substr(k * len, len);
                    joined += slot.substr(0, slot.find('\0'));
                }
                strings[name] = joined;
            }
        } else if ((cls == H5T_INTEGER || cls == H5T_FLOAT) && count == 1) {
            double value = 0;
            attr.read(H5::PredType::NATIVE_DOUBLE, &value);
            numbers[name] = value;
        }
    }
}

template <typename T>
Array<T> read_dataset(const H5::Group& group, const std::string& name, const H5::PredType& type, const std::string& file,
                      const std::string& where) {
    H5::DataSet ds = group.openDataSet(name);
    const H5T_class_t cls = ds.getTypeClass();
    if (cls != H5T_FLOAT && cls != H5T_INTEGER)
        throw HarnessError(where + "/" + name + " is not numeric (HDF5 type class " + std::to_string(cls) + "). " +
                           regenerate_hint(file));
    std::string why;
    const auto dims = checked_dims(ds, why);  // before allocating: the header may claim anything
    if (!dims) throw HarnessError(where + "/" + name + ": " + why + ". " + regenerate_hint(file));
    Array<T> a;
    a.shape = *dims;
    std::size_t n = 1;
    for (std::size_t d : a.shape) n *= d;
    a.data.resize(n);
    if (n) ds.read(a.data.data(), type);  // HDF5 converts the stored type to T
    return a;
}

template <typename T>
std::map<std::string, Array<T>> read_group(const H5::Group& parent, const std::string& name,
                                           const H5::PredType& type, const std::string& file, const std::string& where) {
    std::map<std::string, Array<T>> out;
    if (!parent.nameExists(name)) return out;
    if (parent.childObjType(name) != H5O_TYPE_GROUP)
        throw HarnessError(where + "/" + name + " should be a group of datasets. " + regenerate_hint(file));
    H5::Group g = parent.openGroup(name);
    for (hsize_t i = 0; i < g.getNumObjs(); ++i) {
        const std::string member = g.getObjnameByIdx(i);
        if (g.childObjType(member) != H5O_TYPE_DATASET)
            throw HarnessError(where + "/" + name + "/" + member + " should be a dataset. " + regenerate_hint(file));
        out[member] = read_dataset<T>(g, member, type, file, where + "/" + name);
    }
    return out;
}

std::string to_hex(const unsigned char* digest, unsigned len) {
    static const char* hex = "0123456789abcdef";
    std::string s;
    for (unsigned i = 0; i < len; ++i) {
        s += hex[digest[i] >> 4];
        s += hex[digest[i] & 15];
    }
    return s;
}

// Incremental sha256 over byte chunks (OpenSSL's EVP interface).
class Sha256 {
public:
    Sha256() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) { EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr); }
    void update(const char* data, std::size_t n) { EVP_DigestUpdate(ctx_.get(), data, n); }
    std::string hex() {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        EVP_DigestFinal_ex(ctx_.get(), digest, &len);
        return to_hex(digest, len);
    }

private:
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

void hash_file_into(Sha256& sha, const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw HarnessError("cannot read " + path);
    std::vector<char> buf(1 << 20);
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        sha.update(buf.data(), static_cast<std::size_t>(in.gcount()));
    }
}

}  // namespace

namespace {
bool is_repo_golden(const std::string& golden_dir) {
    std::error_code ec;
    return golden_dir.empty() ||
           fs::weakly_canonical(golden_dir, ec) == fs::weakly_canonical(fs::path(LMLAB_SOURCE_DIR) / "golden", ec);
}
}  // namespace

// The fixture folder of `at` (a folder, or a file in one): the nearest folder from `at` up that holds
// manifest.json; else `at` itself when it is a folder; else "" (not known).
std::string fixture_folder_of(const std::string& at) {
    if (at.empty()) return "";
    std::error_code ec;
    fs::path start = fs::absolute(at, ec).lexically_normal();
    if (!start.has_filename() && start != start.root_path()) start = start.parent_path();  // "dir/" -> "dir"
    const bool is_dir = fs::is_directory(start, ec);
    for (fs::path d = is_dir ? start : start.parent_path(); !d.empty(); d = d.parent_path()) {
        if (fs::exists(d / "manifest.json", ec)) return d.string();
        if (d == d.parent_path()) break;
    }
    return is_dir ? start.string() : "";
}

// The command's paths are relative to the repository (.venv/, scripts/), so the hint says where to run
// it, and the folder it writes is absolute (quoted when it holds a space or a quote).
std::string regenerate_hint(const std::string& at) {
    const std::string run = std::string("Regenerate the fixtures, from ") + LMLAB_SOURCE_DIR + ": " + kRegenerateCommand;
    const std::string golden = fixture_folder_of(at);
    if (is_repo_golden(golden)) return run + " (or rebuild: the build's `golden` target re-exports stale fixtures).";
    std::string quoted = golden;
    if (golden.find_first_of(" '\"$\\") != std::string::npos) {
        quoted = "'";
        for (char c : golden) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
        quoted += "'";
    }
    return run + " --out " + quoted;
}


const Array<float>& Case::input(const std::string& name, const std::vector<std::size_t>& shape) const {
    const auto it = inputs.find(name);
    if (it == inputs.end())
        throw HarnessError(file + ": dataset /" + this->name + "/inputs/" + name + " is missing (expected shape " +
                           shape_str(shape) + "). The fixture does not match this harness; " + regenerate_hint(file));
    bool ok = it->second.shape.size() == shape.size();
    for (std::size_t i = 0; ok && i < shape.size(); ++i)
        ok = shape[i] == kAnyDim || shape[i] == it->second.shape[i];
    if (!ok)
        throw HarnessError(file + ": dataset /" + this->name + "/inputs/" + name + " has shape " +
                           shape_str(it->second.shape) + ", expected " + shape_str(shape) + ". " + regenerate_hint(file));
    return it->second;
}

double Case::number(const std::string& attr) const {
    const auto it = numbers.find(attr);
    if (it == numbers.end())
        throw HarnessError(file + ": /" + name + " has no numeric attribute '" + attr + "'. " + regenerate_hint(file));
    return it->second;
}

const std::string& Case::string(const std::string& attr) const {
    const auto it = strings.find(attr);
    if (it == strings.end())
        throw HarnessError(file + ": /" + name + " has no string attribute '" + attr + "'. " + regenerate_hint(file));
    return it->second;
}

Fixture read_fixture(const std::string& path) {
    if (!fs::exists(path)) throw HarnessError(path + ": fixture file is missing. " + regenerate_hint(path));
    H5::Exception::dontPrint();  // we report errors ourselves, with the file name
    Fixture fx;
    fx.path = path;
    std::string where = "/";
    try {
        if (!H5::H5File::isHdf5(path))
            throw HarnessError(path + ": not an HDF5 file (truncated or overwritten?). " + regenerate_hint(path));
        H5::H5File file(path, H5F_ACC_RDONLY);
        read_attributes(file, fx.numbers, fx.strings);
        fx.name = fx.strings["fixture"];
        fx.level = fx.strings["level"];
        fx.exporter_sha256 = fx.strings["exporter_sha256"];
        const double version = fx.numbers["format_version"];  // (a double: NaN or 1e300 must not reach a cast)
        if (version != static_cast<double>(kFormatVersion))
            throw HarnessError(path + ": format_version is " + fmt::format("{:g}", version) + ", this harness reads " +
                               std::to_string(kFormatVersion) + ". " + regenerate_hint(path));
        fx.format_version = kFormatVersion;
        for (hsize_t i = 0; i < file.getNumObjs(); ++i) {
            const std::string name = file.getObjnameByIdx(i);
            if (name.rfind("case_", 0) != 0) continue;
            if (file.childObjType(name) != H5O_TYPE_GROUP)
                throw HarnessError(path + ": /" + name + " should be a group. " + regenerate_hint(path));
            where = "/" + name;
            H5::Group g = file.openGroup(name);
            Case c;
            c.file = path;
            c.name = name;
            read_attributes(g, c.numbers, c.strings);
            c.description = c.strings["description"];
            c.inputs = read_group<float>(g, "inputs", H5::PredType::NATIVE_FLOAT, path, path + ": " + where);
            c.outputs = read_group<float>(g, "outputs", H5::PredType::NATIVE_FLOAT, path, path + ": " + where);
            c.reference64 = read_group<double>(g, "reference64", H5::PredType::NATIVE_DOUBLE, path, path + ": " + where);
            if (c.outputs.empty())
                throw HarnessError(path + ": " + where + "/outputs is missing or empty. " + regenerate_hint(path));
            fx.cases.push_back(std::move(c));
        }
    } catch (const H5::Exception& e) {
        throw HarnessError(path + ": cannot read " + where + " (" + e.getDetailMsg() +
                           "): the file is truncated or damaged. " + regenerate_hint(path));
    }
    if (fx.cases.empty()) throw HarnessError(path + ": holds no case_NNN groups. " + regenerate_hint(path));
    std::sort(fx.cases.begin(), fx.cases.end(), [](const Case& a, const Case& b) { return a.name < b.name; });
    return fx;
}

std::string sha256_file(const std::string& path) {
    Sha256 sha;
    hash_file_into(sha, path);
    return sha.hex();
}

std::string exporter_sha256(const std::string& scripts_dir) {
    // the package's *.py files by path relative to it ('/'-separated), sorted bytewise
    const fs::path package = fs::path(scripts_dir) / kExporterPackage;
    std::vector<std::string> files;
    if (fs::is_directory(package))
        for (const auto& entry : fs::recursive_directory_iterator(package)) {
            const fs::path rel = entry.path().lexically_relative(package);
            if (entry.is_regular_file() && rel.extension() == ".py" &&
                std::find(rel.begin(), rel.end(), fs::path("__pycache__")) == rel.end())
                files.push_back(rel.generic_string());
        }
    std::sort(files.begin(), files.end());
    // one line per file, "<sha256 of its bytes>  <relative path>\n" (sha256sum's format), so a
    // rename changes the hash as an edit does; the hash is the sha256 of those lines
    Sha256 listing;
    for (const auto& rel : files) {
        const std::string line = sha256_file((package / rel).string()) + "  " + rel + "\n";
        listing.update(line.data(), line.size());
    }
    return listing.hex();
}

void check_manifest(const std::string& golden_dir, const std::string& scripts_dir, bool model_files,
                    const std::set<std::string>* only) {
    const std::string manifest_path = (fs::path(golden_dir) / "manifest.json").string();
    const std::string hint = regenerate_hint(golden_dir);
    std::ifstream in(manifest_path);
    if (!in && is_repo_golden(golden_dir))
        throw HarnessError(manifest_path + " is missing: the fixtures were never exported. " + hint);
    if (!in)  // --golden names a folder that may not be a fixture folder at all
        throw HarnessError(manifest_path + " is missing: " + golden_dir + " holds no exported fixtures (--golden is the "
                           "folder export_golden.py wrote; the repository's is " + LMLAB_SOURCE_DIR + "/golden). " + hint);
    nlohmann::json manifest;
    try {
        manifest = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw HarnessError(manifest_path + " is not valid JSON (" + e.what() + "). " + hint);
    }
    if (!manifest.is_object() || !manifest.contains("exporter_sha256") || !manifest["exporter_sha256"].is_string())
        throw HarnessError(manifest_path + " is not a fixture manifest: it has no exporter_sha256 string (export_golden.py "
                           "writes one; is " + golden_dir + " the fixture folder?). " + hint);
    const std::string current = exporter_sha256(scripts_dir);
    const std::string recorded = manifest["exporter_sha256"].get<std::string>();
    if (recorded != current)
        throw HarnessError(manifest_path + ": fixtures are stale: made by exporter " + recorded.substr(0, 12) +
                           ", but " + (fs::path(scripts_dir) / kExporterPackage).string() + " is now " +
                           current.substr(0, 12) + ". " + hint);
    if (!manifest.contains("files") || !manifest["files"].is_object() || manifest["files"].empty())
        throw HarnessError(manifest_path + " lists no fixture files. " + hint);
    // every bad file, not the first only: after an export that stopped half-way, or a copy that lost
    // some files, the user sees how many and which
    std::vector<std::string> bad, others;
    for (const auto& [rel, digest] : manifest["files"].items()) {
        const fs::path relp(rel);
        if (!digest.is_string() || relp.empty() || relp.is_absolute() ||
            std::find(relp.begin(), relp.end(), fs::path("..")) != relp.end())
            throw HarnessError(manifest_path + ": entry '" + rel + "' should be a path inside " + golden_dir +
                               " with a sha256 string. " + hint);
        if (!model_files && relp.extension() != ".h5") continue;  // hashing 150 MB of weights per run: only on request
        const std::string file = (fs::path(golden_dir) / rel).string();
        const bool read = !only || only->contains(rel);  // a file the selected stages read
        if (!fs::exists(file)) {
            // the files the selected stages read first: they are what the user asked about
            (read ? bad : others).push_back(file + " is listed in the manifest but missing");
            continue;
        }
        if (!read) continue;
        const std::string actual = sha256_file(file);
        if (actual != digest.get<std::string>())
            bad.push_back(file + ": sha256 " + actual.substr(0, 12) + " differs from the manifest's " +
                          digest.get<std::string>().substr(0, 12) + " (changed or damaged since export)");
    }
    bad.insert(bad.end(), others.begin(), others.end());
    if (bad.size() == 1) throw HarnessError(bad[0] + ". " + hint);
    if (!bad.empty()) {
        constexpr std::size_t kListed = 20;
        std::string msg = std::to_string(bad.size()) + " fixture files of " + manifest_path + " are missing or changed:";
        for (std::size_t i = 0; i < std::min(bad.size(), kListed); ++i) msg += "\n  " + bad[i];
        if (bad.size() > kListed) msg += "\n  ... and " + std::to_string(bad.size() - kListed) + " more";
        throw HarnessError(msg + "\n" + hint);
    }
}

}  // namespace lmlab
