#include "harness/runner.h"

#include <fnmatch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <filesystem>
#include <fmt/format.h>
#include <tuple>

namespace lmlab {

namespace {

// max that lets NaN win: a NaN anywhere must not hide behind the finite errors of other cases
double worst(double a, double b) { return (std::isnan(a) || std::isnan(b)) ? NAN : std::max(a, b); }

void summarise(StageResult& r) {
    for (std::size_t i = 0; i < r.outputs.size(); ++i) {
        const Metrics& m = r.outputs[i].metrics;
        // the worst error against the reference: an invariant between two of our own runs (its own
        // scale, e.g. a ratio to a bound) still fails the stage, but is not an error against the reference
        if (r.outputs[i].compared_with != "invariant") {
            r.worst_max_abs = worst(r.worst_max_abs, m.max_abs);
            r.worst_max_rel = worst(r.worst_max_rel, m.max_rel);
        }
        if (m.has_reference64) {
            r.has_reference64 = true;
            r.worst_accuracy_ratio = worst(r.worst_accuracy_ratio, m.accuracy_ratio);
        }
        r.n_mismatch += m.n_mismatch;
        r.n_elements += m.n;
        if (!m.passed() && !r.first_failure) r.first_failure = i;
    }
}

// When the stage also ran this output teacher-forced (fed PyTorch's inputs: "<name> [teacher-forced]"),
// say whether the failing piece adds the error itself or inherits it from upstream.
std::string attribution(const StageResult& r, const OutputResult& f) {
    const std::string forced = f.output + " [teacher-forced]";
    for (const OutputResult& o : r.outputs) {
        if (o.case_name != f.case_name || o.output != forced) continue;
        if (o.metrics.passed())
            return fmt::format("; teacher-forced (PyTorch's input to this layer) it passes with max abs {:.3g}: "
                               "the error is INHERITED from upstream", o.metrics.max_abs);
        return fmt::format("; it fails even teacher-forced (PyTorch's input to this layer, max abs {:.3g}): "
                           "this layer ADDS the error", o.metrics.max_abs);
    }
    return "";
}

// What a heatmap's rows and columns are, for its axis labels: a model stage's outputs are stacked
// over positions ([positions, features], the KV cache [layers, positions, kv_dim]), generation's
// over steps; a 1-D output split into rows is heads x head_dim (error_heatmap).
std::pair<std::string, std::string> heatmap_axes(const std::string& level, const std::vector<std::size_t>& shape,
                                                 std::size_t rows, std::size_t cols) {
    if (shape.size() <= 1) return {rows > 1 ? "head" : "", rows > 1 ? "element of the head" : "element"};
    const std::string last = fmt::format("dim {} ({})", shape.size() - 1, cols);
    if (level == "model") return {shape.size() == 2 ? "position" : "layer, position", "feature (vocabulary id for logits)"};
    if (level == "generation") return {"step", "vocabulary id, or the reference's top-k rank"};
    return {shape.size() == 2 ? "dim 0" : fmt::format("dims 0..{}", shape.size() - 2), last};
}

}  // namespace

StageResult run_stage(const Stage& stage, const StageEnv& env) {
    StageResult r;
    r.id = stage.id;
    r.level = stage.level;
    r.fixture = stage.fixture;
    r.tol = stage.tol;
    r.tol_why = stage.tol_why;
    const auto t0 = std::chrono::steady_clock::now();
    try {
        StageEnv stage_env = env;
        stage_env.tol = stage.tol;
        if (stage_env.family.empty()) stage_env.family = stage.family;
        // A stage whose model (or tokenizer) comes from ../shared, or is made by the exporter from
        // ../shared (the tiny GPT-2's tokenizer.json), is skipped when that folder is absent.
        if (*stage.model) {
            stage_env.model = resolve_model_path(stage.model, env.golden_dir, env.shared_dir);
            if (!std::filesystem::exists(parse_model_spec(stage_env.model).path) &&  // (without a "#q8_0" suffix)
                (is_shared_path(stage.model) || !std::filesystem::exists(env.shared_dir)))
                throw SkipStage(stage_env.model + " not found: this stage needs the shared data folder " + env.shared_dir +
                                " (set LMLAB_SHARED or pass --shared DIR)");
        }
        const auto fixture_path = std::filesystem::path(env.golden_dir) / stage.fixture;
        if (!std::filesystem::exists(fixture_path) && is_shared_path(stage.model))
            throw HarnessError(fixture_path.string() + " is missing: the exporter writes it only when the shared "
                               "folder is present. Re-export with it: LMLAB_SHARED=" + env.shared_dir + " " +
                               kRegenerateCommand + " (or rebuild)");
        const Fixture fx = read_fixture(fixture_path.string());
        if (!env.exporter_sha256.empty() && fx.exporter_sha256 != env.exporter_sha256)
            throw HarnessError(fx.path + ": stale: written by exporter " + fx.exporter_sha256.substr(0, 12) +
                               ", but scripts/" + kExporterPackage + " is now " + env.exporter_sha256.substr(0, 12) +
                               ". " + regenerate_hint(env.golden_dir));
        if (fx.name != stage.fixture)
            throw HarnessError(fx.path + ": root attribute fixture is '" + fx.name + "', expected '" + stage.fixture +
                               "'. " + regenerate_hint(fx.path));
        std::size_t n_heatmaps = 0;
        for (const Case& c : fx.cases) {
            std::vector<StageOutput> outs;
            try {
                outs = stage.run(fx, c, stage_env);
            } catch (const SkipCase& e) {  // this case only: listed with its reason, the next case runs
                r.skipped.push_back({c.name, c.description, "", e.what()});
                continue;
            }
            ++r.cases_run;
            for (StageOutput& out : outs) {
                if (!out.skip.empty()) {  // an output this stage does not produce: listed, not compared
                    r.skipped.push_back({c.name, c.description, out.golden, out.skip});
                    continue;
                }
                if (out.golden.empty() && out.series) {  // a series: reported whole, not compared
                    r.series.push_back({out.name, std::vector<double>(out.data.begin(), out.data.end()), out.note});
                    continue;
                }
                if (out.golden.empty()) {  // a measurement: reported, not compared
                    const double v = out.data.size() == 1 ? out.data[0] : NAN;
                    r.measurements.push_back({out.name, v, out.note});
                    if (!std::isfinite(v) && r.reason.empty())
                        r.reason = fmt::format("measurement '{}' of {} is not finite ({})", out.name, c.name, v);
                    continue;
                }
                const Array<float> invariant = out.expected ? Array<float>{{out.expected->size()}, *out.expected} : Array<float>{};
                const auto found = out.expected ? c.outputs.end() : c.outputs.find(out.golden);
                if (!out.expected && found == c.outputs.end())
                    throw HarnessError(fx.path + ": dataset /" + c.name + "/outputs/" + out.golden +
                                       " is missing. " + regenerate_hint(fx.path));
                Array<float> sliced;  // out.rows: only those rows of the golden output (and of its reference64)
                std::span<const double> truth;
                const auto ref = out.expected ? c.reference64.end() : c.reference64.find(out.golden);
                if (ref != c.reference64.end() && ref->second.data.size() == found->second.data.size()) truth = ref->second.data;
                if (out.rows && !out.expected) {
                    const auto& g = found->second;
                    const auto [first, last] = *out.rows;
                    if (g.shape.empty() || first >= last || last > g.shape[0])
                        throw HarnessError(fmt::format("{}: rows [{}, {}) of outputs/{} {}", stage.id, first, last,
                                                             out.golden, shape_str(g.shape)));
                    const std::size_t row_size = g.data.size() / g.shape[0];
                    sliced.shape = g.shape;
                    sliced.shape[0] = last - first;
                    sliced.data.assign(g.data.begin() + static_cast<std::ptrdiff_t>(first * row_size),
                                       g.data.begin() + static_cast<std::ptrdiff_t>(last * row_size));
                    if (!truth.empty()) truth = truth.subspan(first * row_size, (last - first) * row_size);
                }
                const Array<float>& golden = out.expected ? invariant : out.rows ? sliced : found->second;
                if (out.expected && golden.data.size() != out.data.size())  // our own two runs disagree in size: our bug
                    throw HarnessError(fmt::format("{}: '{}' has {} elements but the run it must equal ('{}') has "
                                                         "{}: a bug in the stage function, not in the fixture",
                                                         stage.id, out.name, out.data.size(), out.golden, golden.data.size()));
                if (golden.data.size() != out.data.size())
                    throw HarnessError(fx.path + ": dataset /" + c.name + "/outputs/" + out.golden + " has shape " +
                                       shape_str(golden.shape) + " (" + std::to_string(golden.data.size()) +
                                       " elements), but " + stage.id + " produced " + std::to_string(out.data.size()) +
                                       " elements for '" + out.name + "'");
                OutputResult o;
                o.case_name = c.name;
                o.case_description = c.description;
                for (const auto& [key, value] : c.numbers) o.case_params += fmt::format("; {} {:g}", key, value);
                o.output = out.name;
                o.golden = out.golden;
                o.shape = golden.shape;
                o.tol = out.tol.value_or(stage.tol);
                o.metrics = compare(out.data, golden.data, truth, o.tol);
                if (out.expected) o.compared_with = "invariant";
                std::vector<float> rounded;  // the truth rounded to float32, when the case compares with it
                if (const auto cw = c.strings.find("compare_with");
                    !out.expected && cw != c.strings.end() && cw->second == "reference64") {
                    // The exporter marked this case: PyTorch's float32 answer is itself far from the
                    // truth here (e.g. LayerNorm of 1e4 ± 1e-2, where a float32 mean cancels), so the
                    // tolerance is applied against the float64 truth rounded to float32; the
                    // accuracy ratio against PyTorch stays as measured.
                    if (truth.empty())
                        throw HarnessError(fx.path + ": /" + c.name + " compares with reference64/" + out.golden +
                                           ", which is missing. " + regenerate_hint(fx.path));
                    rounded.assign(truth.begin(), truth.end());
                    const Metrics vs_torch = o.metrics;
                    o.metrics = compare(out.data, rounded, truth, o.tol);
                    o.metrics.torch_err64 = vs_torch.torch_err64;
                    o.metrics.accuracy_ratio = vs_torch.accuracy_ratio;
                    o.compared_with = "reference64";
                }
                // where the error sits, against what the tolerance was applied to
                const std::span<const float> against = rounded.empty() ? std::span<const float>(golden.data) : rounded;
                o.by_row = error_by_row(out.data, against, o.shape);
                if (!o.metrics.passed() && n_heatmaps < kMaxHeatmapsPerStage) {
                    const auto hd = c.numbers.find("head_dim");  // a kernel case of heads (rope): heads x head_dim
                    const std::size_t head_dim = hd != c.numbers.end() && hd->second > 0 ? static_cast<std::size_t>(hd->second) : 0;
                    o.heatmap = error_heatmap(out.data, against, o.shape, head_dim);
                    std::tie(o.heatmap_rows, o.heatmap_cols) = heatmap_axes(stage.level, o.shape, o.heatmap->rows, o.heatmap->cols);
                    ++n_heatmaps;
                }
                if (!o.metrics.passed()) {
                    o.message = mismatch_message(o.metrics, o.shape, o.tol);
                    if (o.compared_with == "reference64")
                        o.message += "\n(compared with the float64 truth rounded to float32: the case says PyTorch's "
                                     "float32 result is ill-conditioned here)";
                    if (!out.note.empty()) o.message += "\n" + out.note;
                }
                r.outputs.push_back(std::move(o));
            }
        }
        summarise(r);
        r.status = r.first_failure || !r.reason.empty() ? "fail" : "pass";  // (reason: a non-finite measurement)
        if (r.status == "pass" && r.cases_run == 0 && !r.skipped.empty()) {  // nothing compared: not a pass
            r.status = "skipped";
            r.reason = fmt::format("every case skipped ({}): {}", r.skipped.size(), r.skipped.front().reason);
        }
        if (r.first_failure) {
            const OutputResult& f = r.outputs[*r.first_failure];
            r.reason = "first mismatch: " + f.case_name + " (" + f.case_description + f.case_params + "), output '" +
                       f.output + "'";
            r.reason += attribution(r, f);
        }
    } catch (const SkipStage& e) {
        r.status = "skipped";
        r.reason = e.what();
    } catch (const std::exception& e) {
        r.status = "error";
        r.reason = e.what();
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

std::vector<const Stage*> selected_stages(const RunOptions& opt) {
    std::vector<const Stage*> out;
    for (const std::string& level : levels()) {
        if (!opt.level.empty() && opt.level != level) continue;
        for (const Stage& s : stages()) {
            if (s.level != level || fnmatch(opt.stage_glob.c_str(), s.id, 0) != 0) continue;
            if (std::any_of(opt.except_globs.begin(), opt.except_globs.end(),
                            [&](const std::string& g) { return fnmatch(g.c_str(), s.id, 0) == 0; }))
                continue;
            out.push_back(&s);
        }
    }
    return out;
}

std::set<std::string> golden_files_read(const std::vector<const Stage*>& stages) {
    std::set<std::string> out;
    for (const Stage* s : stages) {
        out.insert(s->fixture);
        const std::string model = parse_model_spec(s->model).path;  // without its "#q8_0" suffix
        if (!model.empty() && !is_shared_path(model)) out.insert(model);
    }
    return out;
}

std::vector<StageResult> run_stages(const RunOptions& opt, void (*on_done)(const StageResult&)) {
    const StageEnv env{opt.golden_dir, opt.shared_dir};
    StageEnv checked = env;
    checked.exporter_sha256 = opt.exporter_sha256;
    std::vector<StageResult> results;
    std::vector<std::string> failed_gates;  // gates (stage_provides) of stages that failed or did not run
    for (const Stage* stage : selected_stages(opt)) {
        const Stage& s = *stage;
        std::string blocked_by;  // a required gate that failed
        for (const std::string& req : stage_requires(s))
            if (blocked_by.empty() && std::find(failed_gates.begin(), failed_gates.end(), req) != failed_gates.end())
                blocked_by = req;
        StageResult r;
        if (!blocked_by.empty() && !opt.keep_going) {
            r.id = s.id;
            r.level = s.level;
            r.fixture = s.fixture;
            r.tol = s.tol;
            r.tol_why = s.tol_why;
            r.status = "not_run";
            r.reason = "'" + blocked_by + "' failed (a stage this one needs); fix it first (or pass --keep-going)";
        } else {
            r = run_stage(s, checked);
        }
        if (r.status == "fail" || r.status == "error" || r.status == "not_run")
            for (const std::string& g : stage_provides(s)) failed_gates.push_back(g);
        if (on_done) on_done(r);
        results.push_back(std::move(r));
    }
    return results;
}

}  // namespace lmlab
