// The GGUF parser on hostile files (fuzz/regressions/gguf/, written by scripts/lmlab_ref/gguf_hostile.py,
// each breaking one rule of the format in an otherwise well-formed tiny file): every one must be refused
// with a ModelError that names the file and the rule broken (the phrases below were chosen from the rule,
// before the files were run), never a crash, never a silent load.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "model/load/gguf.h"
#include "model/load/load.h"
#include "model/model.h"

namespace lmlab {
namespace {

// file name -> a phrase the refusal must contain
const std::map<std::string, std::string>& expected() {
    static const std::map<std::string, std::string> m = {
        {"truncated_header", "too short for a GGUF header"},
        {"bad_magic", "does not start with \"GGUF\""},
        {"version_1", "GGUF version 1"},
        {"kv_count_absurd", "kv_count"},
        {"tensor_count_absurd", "tensor_count"},
        {"key_length_past_end", "metadata key 0"},
        {"string_value_past_end", "general.architecture"},
        {"array_count_past_end", "tokenizer.ggml.tokens"},
        {"array_of_u64_past_end", "tokenizer.ggml.scores"},
        {"nested_arrays_deep", "nests arrays"},
        {"value_type_unknown", "not a GGUF value type"},
        {"array_element_type_unknown", "not a GGUF value type"},
        {"bool_value_2", "expected 0 or 1"},
        {"key_twice", "given twice"},
        {"alignment_not_power_of_two", "general.alignment is 24"},
        {"alignment_zero", "general.alignment is 0"},
        {"n_dims_zero", "0 dimensions"},
        {"n_dims_five", "5 dimensions"},
        {"dim_zero", "dimension 1 is 0"},
        {"dims_product_overflow", "not a tensor size"},
        {"dim_absurd", "not a tensor size"},
        {"type_unsupported_iq2_xxs", "IQ2_XXS"},
        {"type_unknown_id", "type 1000"},
        {"type_activation_only_q8_k", "Q8_K"},
        {"row_not_whole_blocks", "not whole 32-element blocks"},
        {"offset_unaligned", "not a multiple of the alignment"},
        {"tensor_past_data_section", "past the data section"},
        {"offset_absurd", "token_embd.weight"},
        {"tensors_overlap", "overlap"},
        {"tensor_twice", "given twice"},
        {"data_section_past_end", "past the end"},
        {"architecture_unknown", "'falcon', which this engine does not run"},
        {"architecture_not_a_string", "general.architecture' is a uint32, expected a string"},
    };
    return m;
}

TEST(GgufHostile, EveryRegressionFileIsRefusedNamingItsRule) {
    const std::filesystem::path dir = std::filesystem::path(LMLAB_SOURCE_DIR) / "fuzz/regressions/gguf";
    std::size_t seen = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
        const std::string name = e.path().stem().string();
        const auto it = expected().find(name);
        ASSERT_NE(it, expected().end()) << e.path() << ": no expected refusal for this file (add it above)";
        try {
            (void)load_model_gguf(e.path().string());
            ADD_FAILURE() << name << ": loaded";
        } catch (const ModelError& err) {
            const std::string msg = err.what();
            EXPECT_NE(msg.find(it->second), std::string::npos) << name << ": '" << msg << "' does not say '" << it->second << "'";
            EXPECT_NE(msg.find(e.path().string()), std::string::npos) << name << ": '" << msg << "' does not name the file";
        }
        ++seen;
    }
    EXPECT_EQ(seen, expected().size()) << "a file of the table is missing from " << dir;
}

// A file cut short inside its header is said to be truncated (re-download it), not "not GGUF": the
// counts and lengths it holds are plausible, only the bytes behind them are gone.
TEST(GgufHostile, AFileCutInItsHeaderIsSaidToBeTruncated) {
    const std::filesystem::path whole = std::filesystem::path(LMLAB_SOURCE_DIR) / "fuzz/regressions/gguf/tensors_overlap.gguf";
    std::ifstream in(whole, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_GT(bytes.size(), 90u);
    const std::string cut = (std::filesystem::temp_directory_path() / "lmlab_gguf_cut.gguf").string();
    for (std::size_t n : {30u, 60u, 90u}) {  // in the tensor count's reach, in the metadata, in a tensor's name
        std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(n));
        try {
            (void)load_model_gguf(cut);
            ADD_FAILURE() << n << " bytes: loaded";
        } catch (const ModelError& err) {
            const std::string msg = err.what();
            EXPECT_NE(msg.find("truncated"), std::string::npos) << n << " bytes: " << msg;
            EXPECT_EQ(msg.find("not GGUF"), std::string::npos) << n << " bytes: " << msg;
        }
    }
    std::filesystem::remove(cut);
}

}  // namespace
}  // namespace lmlab
