// lmlab verify --against / --quantize: the quantization report (harness/quantization.h).
//
//   lmlab verify --model q4.gguf --against f32.gguf          a quantized file against its float one
//   lmlab verify --model f32.gguf --quantize gguf-q4_k       a type tried in memory, against the same file
//   lmlab verify --model q4.gguf --against ~/Qwen2.5-0.5B    any float model of the same shape
//
// No reference runs: both models run in lmlab's engine (each checked against its reference by the
// stages), so what differs is the quantization. The text is the prompt options' (default: the
// paragraph below); the report goes to --out (default reports/quantization/<model file or folder name>[-<type>]).
#include <chrono>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>

#include "harness/cli/commands.h"
#include "harness/fixture.h"
#include "harness/quantization.h"
#include "model/load/load.h"
#include "model/tokenizer/text_tokenizer.h"

namespace fs = std::filesystem;

namespace lmlab {

namespace {

// The default held-out text: a TinyStories-like paragraph written for lmlab (not from any training
// set), plain enough English for any of the families' tokenizers. Give your own with --prompt-file:
// perplexity on a few hundred tokens is a rough number; the per-tensor errors need far fewer.
constexpr const char* kDefaultText =
    "One day, a little boy named Tom went to the park with his mom. The sun was warm and the sky was blue. "
    "Tom saw a big red ball under a tree. He ran to the ball and kicked it. The ball went up, up, up and "
    "landed in the pond. Tom was sad. He did not know how to get his ball back. A kind duck swam to the "
    "ball and pushed it to the side of the pond with its beak. Tom picked up the ball and smiled. \"Thank "
    "you, duck!\" he said. The duck said, \"Quack!\" Tom and his mom gave the duck some bread. Then they "
    "went home, and Tom told his dad about his new friend.";

std::string file_label(const std::string& path) {
    fs::path p = fs::path(path).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    return p.filename().string();
}

void write_file(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    out.close();
    if (!out) throw HarnessError("cannot write " + path.string());
}

}  // namespace

int cmd_verify_quantization(const VerifyArgs& a, const Paths& paths) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::string against_path = a.against.empty() ? a.model.model_path : a.against;
    if (a.against.empty() && !a.quantize.given())
        throw UsageError("verify --against needs the float model to compare with");
    for (const std::string& p : {a.model.model_path, against_path})
        if (!fs::exists(p)) throw UsageError((p == a.model.model_path ? "--model " : "--against ") + p + ": no such file or directory");
    std::string out_dir = a.out_dir;
    if (out_dir == default_verify_dir(paths.reports, a.model.model_path)) {  // not given: the quantization reports' folder
        fs::path p = fs::absolute(a.model.model_path).lexically_normal();
        if (p.filename().empty()) p = p.parent_path();
        std::string name = p.filename().string();  // with its extension: stories260K.gguf and .bin differ
        if (a.quantize.given()) name += "-" + a.quantize.spec;
        out_dir = (fs::path(paths.reports) / "quantization" / name).string();
    }
    prepare_output_dir(out_dir, "--out");

    // the quantized side: the file, quantized on load when asked; the float side: --against
    Model model = apply_quantize(load_model_option(a.model), a.quantize);
    const Model against = load_model(against_path);
    QuantReport r;
    // the tokenizer of --model (a GGUF file carries its own), else of --against
    std::optional<TextTokenizer> tok = model_tokenizer(model, a.model, false);
    if (!tok) tok = model_tokenizer(against, a.model, false);
    if (!tok && a.prompt.given() && !a.prompt.has_ids())
        throw UsageError("no tokenizer found with " + a.model.model_path + " or " + against_path +
                         " to encode the text: give --prompt-ids, or --tokenizer PATH");
    std::vector<int> text;
    int bos = -1;
    if (a.prompt.given()) {
        text = read_prompt(against, tok, a.prompt, a.model).ids;
    } else {
        if (!tok)
            throw UsageError("no tokenizer found with " + against_path + " to encode the held-out text: give --prompt-ids, "
                             "or --tokenizer PATH");
        text = tok->encode_prompt(kDefaultText, false);
        fmt::print(stderr, "verify: held-out text: lmlab's default paragraph ({} tokens); give your own with --prompt-file\n",
                   text.size());
    }
    if (tok) {  // the id a chunk starts with when the text is cut: the prompt's BOS, if the tokenizer adds one
        const std::vector<int> with = tok->encode_prompt("a", false), without = tok->encode("a");
        if (with.size() > without.size()) bos = with.front();
    }
    fmt::print(stderr, "verify: {} ({:.2f} MB of weights) against {} ({:.2f} MB) on {} tokens\n", model.source,
               static_cast<double>(weight_bytes(model)) / 1e6, against.source, static_cast<double>(weight_bytes(against)) / 1e6,
               text.size());
    try {
        r = compare_quantized(model, against, text, a.ctx, a.analysed_rows, bos);
    } catch (const HarnessError& e) {
        throw UsageError(e.what());  // the two models or the text: the user's input
    }
    r.model_label = file_label(a.model.model_path) + (a.quantize.given() ? " as " + parse_quantization(a.quantize.spec, a.quantize.group).name() : "");
    r.against_label = file_label(against_path);
    write_file(fs::path(out_dir) / "report.json", quant_report_json(r).dump(1) + "\n");
    write_file(fs::path(out_dir) / "report.md", quant_report_markdown(r));
    write_file(fs::path(out_dir) / "report.html", quant_report_html(r));
    fmt::print(stderr, "verify: {:.1f} s; report {}/report.html (also report.md, report.json)\n",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), out_dir);
    fmt::print("{}\n", quant_report_line(r));
    finish_stdout();
    return kExitOk;
}

}  // namespace lmlab
