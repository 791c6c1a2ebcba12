// The stage table: every check the harness can run, one row each.
//
// A stage = id, level, fixture file, tolerance (with the reason for it), and a function from one
// fixture case to our outputs. The harness compares each returned output with the fixture's
// outputs/<golden> (PyTorch float32) and reference64/<golden> (float64 truth).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "harness/compare.h"
#include "harness/fixture.h"
#include "model/forward.h"
#include "model/model.h"

namespace lmlab {

inline constexpr Tolerance kExact{0.0, 0.0};      // ids, tokens, and invariants that must hold bit for bit
inline constexpr Tolerance kLogits{1e-4, 1e-4};   // the seed spec's logits tolerance (model and generation stages)

// One output we computed for a case.
struct StageOutput {
    std::string name;          // what the report calls it ("y", "layer0.q", "layer0.q [teacher-forced]")
    std::string golden;        // which outputs/<golden> of the case it is compared with; "" = a
                               // measurement: data holds one number, reported (StageResult::measurements,
                               // report.md's "Measurements"), never compared; a non-finite one fails the stage
    std::vector<float> data;   // row-major, same element count as the golden output
    std::string note = {};     // extra explanation printed when this output mismatches
    std::optional<Tolerance> tol = {};  // overrides the stage's tolerance (token ids: exact)
    // compare only rows [first, second) of the golden output's first dimension (e.g. the positions
    // before an int8 rounding tie); data then holds just those rows. Default: the whole output.
    std::optional<std::pair<std::size_t, std::size_t>> rows = {};
    // with an empty golden: data is a series, one number per step, reported whole
    // (StageResult::series, report.json's stages[].series, plotted in report.html), never judged
    bool series = false;
    // an invariant between two of our own runs (batched vs alone, paged vs contiguous cache): data is
    // compared with these numbers instead of outputs/<golden>, and `golden` only labels them in the
    // report. Never the reference: the stage compares with the fixture in its other outputs.
    std::optional<std::vector<float>> expected = {};
    // set: outputs/<golden> of this case is NOT compared, for this reason (e.g. a conformance case's
    // optional output our kernel does not produce); data stays empty. Listed among the stage's
    // skipped cases (StageResult::skipped), never silently dropped.
    std::string skip = {};
};

// The series the generation stages report (stage_generation_greedy), one value per step; report.html
// plots them by these names: the gap between the reference's two most likely tokens, our gap
// between the same two ids (teacher-forced on the reference's tokens), and the near-tie threshold
// (the logits tolerance at that step: a gap below it can flip under float rounding).
inline constexpr const char* kSeriesReferenceGap = "reference top-1 - top-2 logit";
inline constexpr const char* kSeriesOurGap = "ours: logit of the reference's top-1 - top-2 id";
inline constexpr const char* kSeriesTieThreshold = "near-tie threshold (atol + rtol |top-1|)";
// and the measurement of where our greedy tokens first differ (= the step count when they never do)
inline constexpr const char* kMeasureTokensMatched = "greedy tokens equal before the first difference";

// ---- Mixture-of-experts routing (harness/stages/moe_stages.cpp) -------------------------------------------
// Routing is discrete: when the reference's scores of two experts are within the tolerance, float
// rounding may pick the other one (as near-tied greedy tokens may flip). Ours vs the reference's
// chosen ids per token; at the first rank where they differ, the reference's router logits of its
// expert and of ours: a gap within the stage's tolerance is a routing near-tie (reported, not a
// failure: the outputs after it are teacher-forced on the reference's experts), a larger gap a real
// mismatch.
struct RoutingDifference {
    std::size_t token = 0;      // row of the [T, k] ids
    std::size_t rank = 0;       // the first rank where the ids differ
    int ours = 0, ref = 0;      // the expert each chose at that rank
    float ref_score_ref = 0;    // the reference's router logit of its own choice
    float ref_score_ours = 0;   // the reference's router logit of our choice
    double gap = 0, allowed = 0;  // ref_score_ref - ref_score_ours; the tolerance at ref_score_ref
    bool near_tie() const { return gap <= allowed; }
    std::string describe() const;  // "routing near-tie at token 3: experts 5/2, scores 1.2 vs 1.2 (gap 3e-7 < 1e-5)"
};
// ours_ids, ref_ids: [T, k] expert ids (as floats, largest probability first); ref_logits: the
// reference's router logits [T, n_experts]. Every token whose ids differ, in token order.
std::vector<RoutingDifference> compare_routing(std::span<const float> ours_ids, std::span<const float> ref_ids,
                                               std::span<const float> ref_logits, std::size_t k,
                                               std::size_t n_experts, Tolerance tol);
// "t0: 3 5 | t1: 0 7 | ..." : the experts each token chose, [T, k] ids
std::string routing_choices(std::span<const float> ids, std::size_t k);
// Teacher-forced routing at a near-tie: row t's feed-forward run again on the reference's experts
// (ids [top_k], as floats): their weights are our probabilities of them (s.router_probs from the
// first run), then the mixture (model/families/families.h). Leaves row t of s.ffn_out (and shared_out).
void force_experts(const Config& c, const LayerWeights& w, std::size_t t, std::span<const float> ids, RunState& s);

// Thrown by a stage function when it cannot run here (e.g. ../shared is absent): reported as
// "skipped" with the reason, never as a failure.
struct SkipStage : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// Thrown by a stage function for one case it cannot run (an ONNX conformance case whose attribute our
// kernel does not support): the case is listed among the stage's skipped cases with the reason, and
// the stage goes on with the next case. Never a failure, never silent.
struct SkipCase : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct StageEnv {
    std::string golden_dir;  // where fixtures live
    std::string shared_dir;  // ../shared (models and tokenizers), may not exist
    std::string model = {};  // the running stage's model path (resolved), "" for kernels
    std::string family = {}; // the running stage's family ("" for kernels and tokenizers)
    std::string exporter_sha256 = {};  // when set, a fixture written by another exporter is stale
    Tolerance tol = {};                // the running stage's tolerance (for verdicts like near-ties)
};

using StageFn = std::vector<StageOutput> (*)(const Fixture&, const Case&, const StageEnv&);

struct Stage {
    const char* id;        // "kernel.softmax"
    const char* level;     // "kernel", "layer", "model", "generation", "tokenizer"
    const char* family;    // the family it runs (model/family.h: "llama", "gpt2", ...); "" for kernels, whose
                           // families are derived from the family rows' kernel lists, and for tokenizers
    bool int8;             // it runs int8 weights too (the int8 kernels gate it, model/family.h's int8_kernels)
    const char* model;     // the model (or tokenizer) it runs: a path under the golden dir, or "shared:<path>"
                           // under ../shared (skipped when absent); "" for kernels
    const char* fixture;   // relative to the golden dir: "kernel/softmax.h5"; several stages may share one
    const char* recipe;    // how the exporter makes the fixture ("model.forward", "kernel.rope", ...):
                           // scripts/lmlab_ref's recipes, one per name; stages sharing a fixture share it
    Tolerance tol;         // |ours - torch| <= atol + rtol·|torch|
    const char* tol_why;   // one line: why this tolerance
    StageFn run;
};

// Levels in run order. A level runs only when the levels it requires passed: layers need kernels,
// the model needs layers, generation needs the model. Tokenizers stand apart (text -> ids needs
// no arithmetic), so they require nothing.
const std::vector<std::string>& levels();
const std::vector<std::string>& level_requires(const std::string& level);

// Gating is per family: a stage provides gates ("kernel.gpt2" for a kernel GPT-2 calls, "gpt2.layer"
// for a GPT-2 layer stage, "llama.int8.layer" for an int8 LLaMA one, "qwen2.gguf.model" for a model
// stage of a GGUF file, "kernel.ggml" for the stages of ggml's tensor types) and requires the gates below it of
// its own family only ("kernel.gpt2", "gpt2.layer" for a GPT-2 model stage; an int8 stage also the
// int8 ones). Which families a kernel stage gates comes from the family rows (model/family.h: the
// kernels each calls), never typed here. So a broken GELU blocks GPT-2's layers but not LLaMA's,
// which never call it, and a failing GPT-2 layer never marks LLaMA's model Not Run.
std::vector<std::string> stage_provides(const Stage& s);
std::vector<std::string> stage_requires(const Stage& s);

// The file a "model" field names: under golden_dir, or under shared_dir for "shared:<path>".
std::string resolve_model_path(const std::string& model, const std::string& golden_dir, const std::string& shared_dir);
bool is_shared_path(const std::string& model);
// A model field naming a GGUF file (".gguf"): its stages are gated by ggml's tensor types (kernel.ggml) too.
bool is_gguf_model(const std::string& model);

// A model field may ask for int8 weights on load: "<model>#q8_0" (Q8_0, group 64) or
// "<model>#q8_0,group=N". parse_model_spec splits off that suffix (throws HarnessError
// for any other suffix); path is the rest, the file that must exist.
struct ModelSpec {
    std::string path;
    std::size_t q8_group = 0;  // 0: as stored
};
ModelSpec parse_model_spec(const std::string& model);

// Every stage, in level order.
const std::vector<Stage>& stages();
// What `lmlab list --json` prints for the exporter: {"stages": [{id, level, family, int8, model,
// fixture, recipe}], "families": [{name, about, hf_model_types, intermediates, kernels}],
// "int8_kernels": [...]}. The family rows come from model/family.h.
nlohmann::json stage_table_json();
// The family column of `lmlab list`: a stage's family ("llama", "llama int8"), or for a kernel
// the families its rows say call it ("llama gpt2 ... int8").
std::string stage_family_label(const Stage& s);
const Stage* find_stage(const std::string& id);  // nullptr when no stage has this id

// Stage functions (defined in kernel_stages.cpp, ...).
std::vector<StageOutput> stage_matvec(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_ggml_dequantize(const Fixture&, const Case&, const StageEnv&);  // ggml_stages.cpp
std::vector<StageOutput> stage_ggml_matvec(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_gguf_forward(const Fixture&, const Case&, const StageEnv&);   // GGUF models: the
std::vector<StageOutput> stage_gguf_kv_cache(const Fixture&, const Case&, const StageEnv&);  // model stages on
std::vector<StageOutput> stage_gguf_greedy(const Fixture&, const Case&, const StageEnv&);    // the plain path
std::vector<StageOutput> stage_quant_report(const Fixture&, const Case&, const StageEnv&);   // verify --against's numbers
std::vector<StageOutput> stage_linear(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_add(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_layernorm(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_gelu_tanh(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_gelu_erf(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_softmax(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_rmsnorm(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_rope(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_silu(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_sigmoid(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_swiglu(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_attention(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_argmax(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_quantize_q8_0(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_ggml_quantize(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_matvec_q8_0(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_matvec_fast(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_matmul_xwt(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_attention_tiled(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_attention_window(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_attention_window_tiled(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_rope_scaling(const Fixture&, const Case&, const StageEnv&);
// conformance_stages.cpp: ONNX's operator conformance cases (onnx 1.18.0's node tests) through our kernels
std::vector<StageOutput> stage_conformance_softmax(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_conformance_layer_normalization(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_conformance_rms_normalization(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_conformance_gelu(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_conformance_matmul(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_conformance_rotary_embedding(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_conformance_attention(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_conformance_sigmoid(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_conformance_argmax(const Fixture&, const Case&, const StageEnv&);
// model_stages.cpp
// A model by its resolved path, with an optional "#q8_0[,group=N]" suffix (parse_model_spec:
// quantized on load). Loaded once per process: every stage (and `lmlab verify`) shares it.
const Model& cached_model(const std::string& model);
// Helpers for stage functions (model_stages.cpp): the running stage's model; a case attribute that
// must be an index; a [n] input of token ids; a golden output that must have `shape` (Case::kAnyDim:
// any). Each throws HarnessError naming the file and dataset.
const Model& stage_model(const StageEnv& env);
std::size_t case_index(const Case& c, const std::string& attr);
std::vector<int> token_ids(const Case& c, const std::string& name);
const Array<float>& golden(const Case& c, const std::string& name, const std::vector<std::size_t>& shape);
// Where greedy tokens first differ from the reference's (ref_tokens [n]; topk_ids/topk_logits
// [n, k], k >= 2, the reference's best k per step): (steps matched, a note that calls the
// difference a NEAR-TIE when the reference's top-1 and top-2 logits there are within tol, else a
// REAL DIVERGENCE; "" when all match).
std::pair<std::size_t, std::string> first_difference(std::span<const int> ours, std::span<const float> ref_tokens,
                                                     std::span<const float> topk_ids, std::span<const float> topk_logits,
                                                     std::size_t k, const Tolerance& tol);
std::vector<StageOutput> stage_layer_attention(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_layer_ffn(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_layer_block(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_model_forward(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_model_kv_cache(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_model_logits(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_model_prefill(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_generation_greedy(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_layer_block_q8(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_model_forward_q8(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_model_q8_file(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_quant_cost(const Fixture&, const Case&, const StageEnv&);
// serve_stages.cpp
std::vector<StageOutput> stage_model_paged(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_generation_serve_batch(const Fixture&, const Case&, const StageEnv&);
// moe_stages.cpp
std::vector<StageOutput> stage_layer_moe(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_generation_speculative_early_exit(const Fixture&, const Case&, const StageEnv&);
std::vector<StageOutput> stage_generation_speculative_int8(const Fixture&, const Case&, const StageEnv&);
// tokenizer_stages.cpp
std::vector<StageOutput> stage_tokenizer(const Fixture&, const Case&, const StageEnv&);

}  // namespace lmlab
