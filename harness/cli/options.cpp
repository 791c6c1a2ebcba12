#include "harness/cli/options.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <thread>

#include "model/forward.h"
#include "model/load/load.h"
#include "model/testing/shared_dir.h"

namespace fs = std::filesystem;

namespace lmlab {

std::string default_shared_dir() {
    return shared_dir_or((fs::path(LMLAB_SOURCE_DIR) / ".." / "shared").lexically_normal().string());
}

std::string default_model_path() { return (fs::path(LMLAB_SOURCE_DIR) / "golden" / "models" / "tiny-llama.h5").string(); }

void add_model_options(CLI::App& cmd, ModelOptions& o, bool required) {
    auto* m = cmd.add_option("--model", o.model_path,
                             "Hugging Face directory (config.json), GGUF file (.gguf), llm.c or llama2.c checkpoint, or lmlab .h5 file");
    o.model_opt = m;
    if (required) m->required();
    else {
        o.model_path = default_model_path();
        m->capture_default_str();
    }
    cmd.add_option("--tokenizer", o.tokenizer_path,
                   "tokenizer.json, a directory with encoder.json + vocab.bpe, llm.c's gpt2_tokenizer.bin, a "
                   "llama2.c tokenizer.bin, or a GGUF file's tokenizer (default: the one that comes with the model)");
}

void require_model_path(const ModelOptions& o) {
    std::error_code ec;
    if (fs::exists(o.model_path, ec)) return;
    if (o.model_defaulted())
        throw UsageError(fmt::format("no --model given, and lmlab's test model {} is not there: it is exported with the "
                                     "fixtures (bash scripts/run.sh). Or pass --model PATH",
                                     o.model_path));
    throw UsageError(fmt::format("--model {}: no such file or directory", o.model_path));
}

Model load_model_option(const ModelOptions& o) {
    require_model_path(o);
    if (o.model_defaulted()) {
        const std::string stories = (fs::path(default_shared_dir()) / "models" / "stories260K" / "stories260K.bin").string();
        fmt::print(stderr, "note: no --model given: {} is lmlab's test model, with random weights, so its text means "
                           "nothing; pass --model for a trained one, e.g. {}\n",
                   o.model_path, stories);
    }
    return load_model(o.model_path);
}

void add_prompt_options(CLI::App& cmd, PromptOptions& p, const std::string& default_text) {
    p.text = default_text;
    p.text_opt = cmd.add_option("--prompt", p.text, "Prompt text (encoded as the model was trained: BOS for SentencePiece)");
    if (!default_text.empty()) p.text_opt->capture_default_str();
    p.ids_opt = cmd.add_option("--prompt-ids", p.ids, "Prompt as token ids, e.g. 1,403,407")->excludes(p.text_opt);
    p.file_opt = cmd.add_option("--prompt-file", p.file, "Prompt text from a file (- for standard input)")
                     ->excludes(p.text_opt)
                     ->excludes(p.ids_opt);
    cmd.add_flag("--chat", p.chat,
                 "Wrap the prompt in the vocabulary's chat template: ChatML (Qwen: <|im_start|>user ... "
                 "<|im_start|>assistant, stops at <|im_end|>) or Llama 3's (stops at <|eot_id|>); prints the answer only");
    cmd.add_flag("--allow-special", p.allow_special,
                 "Recognise special tokens such as <|endoftext|> in the prompt (else they are plain text)");
}

// A whole number in [lo, hi] for an option, checked before CLI11 converts it: CLI11 prefixes the
// message with the option's name ("--max-new-tokens: 'abc' is not a whole number from 1 to
// 1073741824"), and a negative value for an unsigned option (--seed -1) is refused instead of
// wrapping to 2^64 - 1.
CLI::Validator whole_number(long long lo, long long hi) {
    return CLI::Validator(
        [lo, hi](std::string& s) -> std::string {
            std::size_t used = 0;
            long long v = 0;
            try {
                v = std::stoll(s, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            if (s.empty() || used != s.size() || v < lo || v > hi)
                return fmt::format("'{}' is not a whole number from {} to {}", s, lo, hi);
            return "";
        },
        fmt::format("INT in [{}, {}]", lo, hi));
}

CLI::Validator real_number(double lo, double hi, bool lo_open, const std::string& about) {
    // hi = the largest float: no upper bound to speak of, but a value the option's float can hold
    const std::string range = hi >= std::numeric_limits<float>::max()
                                  ? fmt::format("{} {}, at most {:.2g}", lo_open ? ">" : ">=", lo, hi)
                                  : fmt::format("in {}{}, {}]", lo_open ? "(" : "[", lo, hi);
    return CLI::Validator(
        [lo, hi, lo_open, range, about](std::string& s) -> std::string {
            std::size_t used = 0;
            double v = 0;
            try {
                v = std::stod(s, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            const bool in = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && v <= hi;
            if (s.empty() || used != s.size() || !in) return fmt::format("'{}' is not a number {} ({})", s, range, about);
            return "";
        },
        "NUMBER (" + range + ")");
}

CLI::Validator existing_folder(const std::string& what) {
    return CLI::Validator(
        [what](std::string& s) -> std::string {
            std::error_code ec;
            if (fs::is_directory(s, ec)) return "";
            return fmt::format("'{}' {}: give {}", s, fs::exists(s, ec) ? "is a file, not a folder" : "does not exist", what);
        },
        "DIR");
}

void add_quantize_options(CLI::App& cmd, QuantizeOptions& q) {
    q.spec_opt = cmd.add_option("--quantize", q.spec,
                                "Quantize the weights on load: q8_0 = int8 in groups, as llama2.c's runq.c (--group); "
                                "gguf-<type> = one of llama.cpp's block types as `llama-quantize --pure` makes it "
                                "(gguf-q8_0, gguf-q6_k, gguf-q5_k, gguf-q4_k, gguf-q4_0, ...). Prints the weight memory "
                                "before and after on stderr")
                     ->check([](const std::string& v) {
                         try {
                             parse_quantization(v);
                             return std::string();
                         } catch (const ModelError& e) {
                             return std::string(e.what());
                         }
                     });
    cmd.add_option("--group", q.group, "q8_0's group size: elements per scale; must divide every row length")
        ->check(whole_number(1, static_cast<long long>(kQ8MaxGroup)))
        ->needs(q.spec_opt)
        ->capture_default_str();
}

Model apply_quantize(Model m, const QuantizeOptions& q) {
    if (!q.given()) return m;
    const Quantization how = parse_quantization(q.spec, q.group);
    constexpr double kMB = 1e6;
    const double before = static_cast<double>(weight_bytes(m));
    std::vector<std::string> notes;
    m = quantize(std::move(m), how, &notes);  // the float weights are freed
    const double after = static_cast<double>(weight_bytes(m));
    fmt::print(stderr, "quantized to {}: weights {:.2f} MB -> {:.2f} MB ({:.0f}%)\n", how.name(), before / kMB, after / kMB,
               100.0 * after / before);
    for (const std::string& n : notes) fmt::print(stderr, "  {}\n", n);
    return m;
}

void add_scheduler_options(CLI::App& cmd, ServeOptions& o, const std::string& kv_pages_default) {
    cmd.add_option("--chunk", o.chunk, "At most this many prompt tokens per step (chunked prefill)")
        ->check(whole_number(1, 1 << 16))
        ->capture_default_str();
    cmd.add_option("--max-running", o.max_running, "Sequences in the batch at once")
        ->check(whole_number(1, 4096))
        ->capture_default_str();
    cmd.add_option("--page-size", o.page_size, "Positions per KV-cache page")
        ->check(whole_number(1, 1 << 16))
        ->capture_default_str();
    cmd.add_option("--kv-pages", o.n_pages,
                   fmt::format("Pages in the KV pool (default 0: {}); a request waits at admission until its prompt "
                               "+ max_tokens fit", kv_pages_default))
        ->check(whole_number(0, 1 << 24))
        ->capture_default_str();
}

void add_kernel_options(CLI::App& cmd, KernelOptions& k) {
    cmd.add_flag("--plain", k.plain, "Run on the plain kernels (the readable reference) instead of the fast ones");
    cmd.add_option("--threads", k.threads, "Threads for the fast kernels (results are bit-identical for any count)")
        ->check(whole_number(1, 256))
        ->capture_default_str();
}

void apply_kernel_options(const KernelOptions& k) {
    set_kernel_path(k.plain ? KernelPath::Plain : KernelPath::Fast);
    set_kernel_threads(k.threads);
    const unsigned cores = std::thread::hardware_concurrency();
    if (cores > 0 && static_cast<unsigned>(k.threads) > cores)
        fmt::print(stderr,
                   "lmlab: --threads {} but this machine has {} cores: threads beyond the cores wait for each other "
                   "and make every step slower (docs/performance.md, Threads)\n",
                   k.threads, cores);
}

std::optional<TextTokenizer> model_tokenizer(const Model& m, const ModelOptions& o, bool needed) {
    std::optional<TextTokenizer> tok;
    try {
        tok = find_tokenizer(m, o.tokenizer_path);
    } catch (const ModelError& e) {
        if (!o.tokenizer_path.empty() || needed) throw;
        fmt::print(stderr, "lmlab: no usable tokenizer with the model ({}); printing ids\n", e.what());
        return std::nullopt;
    }
    if (tok) {
        const std::string note = check_tokenizer_fits(m, *tok, o.tokenizer_path.empty() ? "its tokenizer" : o.tokenizer_path);
        if (!note.empty()) fmt::print(stderr, "note: {}\n", note);  // allowed: a note, not an error's "lmlab:"
    }
    return tok;
}

Prompt read_prompt(const Model& m, const std::optional<TextTokenizer>& tok, const PromptOptions& p,
                   const ModelOptions& o) {
    Prompt out;
    if (p.has_ids()) {
        out.ids = parse_ids(p.ids);
        check_ids_in_vocabulary(out.ids, m.config.vocab_size, "--prompt-ids", o.model_path.empty() ? m.source : o.model_path);
        out.from_ids = true;
        return out;
    }
    out.text = p.has_file() ? read_input(p.file, "--prompt-file") : p.text;
    if (!p.given() && p.text.empty() && !tok) {
        out.ids = {1};  // BOS: a model without a tokenizer and no prompt starts from BOS, as llama2.c's run.c
        out.from_ids = true;
        return out;
    }
    if (!tok)
        throw UsageError(fmt::format("--prompt needs a tokenizer: none found with {}; pass --tokenizer PATH "
                                     "(tokenizer.json, a directory with encoder.json + vocab.bpe, or a llama2.c "
                                     "tokenizer.bin), or give --prompt-ids",
                                     o.model_path.empty() ? m.source : o.model_path));
    out.ids = p.chat ? tok->encode_chat(out.text) : tok->encode_prompt(out.text, p.allow_special);
    if (out.ids.empty())
        throw UsageError("the prompt encodes to no tokens: give some text (this tokenizer adds no BOS)");
    return out;
}

void check_ids_in_vocabulary(const std::vector<int>& ids, std::size_t vocab, const std::string& option,
                             const std::string& owner) {
    for (std::size_t i = 0; i < ids.size(); ++i)
        if (ids[i] < 0 || static_cast<std::size_t>(ids[i]) >= vocab)
            throw UsageError(fmt::format("{}: id {} (position {}, counting from 0) is outside the vocabulary [0, {}) of {}{}",
                                         option, ids[i], i, vocab, owner, ids[i] < 0 ? ": token ids start at 0" : ""));
}

std::vector<int> parse_ids(const std::string& text, const std::string& option) {
    if (text.find_first_not_of(" ,") == std::string::npos)
        throw UsageError(option + " is empty: give at least one id, e.g. 1 (BOS)");
    std::vector<int> ids;
    std::string item;
    for (std::size_t i = 0; i <= text.size(); ++i) {
        if (i == text.size() || text[i] == ',') {
            // spaces around an id are fine ("1, 403"); inside one they are an error ("1 403" is not 1403)
            const auto first = item.find_first_not_of(' '), last = item.find_last_not_of(' ');
            item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
            std::size_t used = 0;
            int v = 0;
            try {
                v = std::stoi(item, &used);
            } catch (const std::out_of_range&) {
                throw UsageError(fmt::format("{}: '{}' is outside the range of a token id (ids are 0 to 2^31 - 1; "
                                             "a vocabulary has far fewer)", option, item));
            } catch (const std::exception&) {
                used = 0;
            }
            if (item.empty() || used != item.size())
                throw UsageError(option + ": '" + item + "' is not one integer (expected ids separated by commas, "
                                 "e.g. 1,403,407)");
            ids.push_back(v);
            item.clear();
        } else {
            item += text[i];
        }
    }
    return ids;
}

std::string read_input(const std::string& path, const std::string& option) {
    if (path == "-") {
        std::string text(std::istreambuf_iterator<char>(std::cin), {});
        if (std::cin.bad()) throw UsageError(option + " -: cannot read standard input");
        return text;
    }
    if (fs::is_directory(path)) throw UsageError(fmt::format("{} {}: a directory, not a text file", option, path));
    std::ifstream in(path, std::ios::binary);
    if (!in) throw UsageError(fmt::format("{} {}: cannot open ({})", option, path, std::strerror(errno)));
    std::string text(std::istreambuf_iterator<char>(in), {});
    if (in.bad()) throw UsageError(fmt::format("{} {}: error while reading", option, path));
    return text;
}

// ---- Output ---------------------------------------------------------------------------------------

OutputFile::OutputFile(const std::string& path, const std::string& option) : path_(path), option_(option) {
    if (path.empty() || path == "-") {
        is_stdout_ = true;
        f_ = stdout;
        path_ = "standard output";
        return;
    }
    const fs::path parent = fs::path(path).parent_path();
    if (!parent.empty() && !fs::is_directory(parent))
        throw UsageError(fmt::format("{} {}: the folder {} does not exist (create it, or choose another path)", option,
                                     path, parent.string()));
    std::error_code ec;
    if (!fs::exists(path, ec) || fs::is_regular_file(path, ec)) part_ = path + ".part";
    f_ = std::fopen((part_.empty() ? path : part_).c_str(), "wb");
    if (!f_) throw UsageError(fmt::format("{} {}: cannot write there ({})", option, path, std::strerror(errno)));
}

OutputFile::~OutputFile() {
    if (!f_ || is_stdout_) return;
    std::fclose(f_);
    if (!part_.empty()) std::remove(part_.c_str());
}

void OutputFile::write(const std::string& text) {
    if (!f_) throw UsageError(fmt::format("{} {}: written after it was closed", option_, path_));
    if (!text.empty() && std::fwrite(text.data(), 1, text.size(), f_) != text.size()) failed_ = true;
}

void OutputFile::close() {
    if (!f_) return;
    const bool flushed = std::fflush(f_) == 0 && !std::ferror(f_);
    const int err = errno;
    const bool closed = is_stdout_ || std::fclose(f_) == 0;
    f_ = nullptr;
    const bool ok = !failed_ && flushed && closed;
    if (!ok && !part_.empty()) std::remove(part_.c_str());
    if (!ok)
        throw UsageError(fmt::format("{}{}: writing failed ({}): {}", option_.empty() ? "" : option_ + " ", path_,
                                     std::strerror(err ? err : EIO),
                                     part_.empty() ? "the output is incomplete" : "the file is left as it was"));
    if (!part_.empty() && std::rename(part_.c_str(), path_.c_str()) != 0) {
        const int rename_err = errno;
        std::remove(part_.c_str());
        throw UsageError(fmt::format("{}{}: cannot replace it ({})", option_.empty() ? "" : option_ + " ", path_,
                                     std::strerror(rename_err)));
    }
}

void finish_stdout() {
    if (std::fflush(stdout) != 0 || std::ferror(stdout))
        throw UsageError(fmt::format("standard output: writing failed ({}): the output is incomplete", std::strerror(errno)));
}

void prepare_output_dir(const std::string& dir, const std::string& option) {
    const fs::path p(dir);
    if (fs::exists(p) && !fs::is_directory(p))
        throw UsageError(fmt::format("{} {}: a file, not a folder", option, dir));
    if (!fs::exists(p)) {  // a report folder is lmlab's own tree: made, with its parents, before the work
        std::error_code ec;
        fs::create_directories(p, ec);
        if (ec) throw UsageError(fmt::format("{} {}: cannot create the folder ({})", option, dir, ec.message()));
    }
    // writable? (a read-only folder would otherwise fail after every stage has run)
    const fs::path probe = p / ".lmlab-write-test";
    std::FILE* f = std::fopen(probe.c_str(), "wb");
    if (!f) throw UsageError(fmt::format("{} {}: cannot write in this folder ({})", option, dir, std::strerror(errno)));
    std::fclose(f);
    fs::remove(probe);
}

}  // namespace lmlab
