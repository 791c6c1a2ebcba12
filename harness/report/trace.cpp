#include "harness/report/trace.h"

#include "harness/fixture.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <stdexcept>

#include "harness/report/html.h"
#include "kernels/kernels.h"
#include "model/record.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/session.h"
#include "model/tokenizer/utf8.h"

namespace lmlab {

using html::escape;

namespace {
// positions fed: the prompt and every generated token but the last
std::size_t fed_positions(std::size_t n_prompt, std::size_t max_new_tokens) {
    return n_prompt + (max_new_tokens > 0 ? max_new_tokens - 1 : 0);
}
// positions per drawn row/column of a heatmap (1: every position its own)
std::size_t block_of(std::size_t n) { return (n + kTraceDrawnPositions - 1) / kTraceDrawnPositions; }
}  // namespace

std::size_t trace_cells(const Config& c, std::size_t n_prompt, std::size_t max_new_tokens) {
    const std::size_t n = fed_positions(n_prompt, max_new_tokens), b = std::max<std::size_t>(block_of(n), 1);
    const std::size_t m = (n + b - 1) / b;
    return c.n_layers * c.n_heads * m * (m + 1) / 2;
}

namespace {

// The k most likely next tokens and their probabilities: softmax of the logits in double, the
// larger logit first (the smaller id on a tie, as argmax).
std::vector<std::pair<int, double>> top_k(std::span<const float> logits, std::size_t k) {
    double mx = -INFINITY;
    for (float v : logits) mx = std::max(mx, static_cast<double>(v));
    double sum = 0;
    for (float v : logits) sum += std::exp(static_cast<double>(v) - mx);
    std::vector<int> ids(logits.size());
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int>(i);
    k = std::min(k, ids.size());
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(), [&](int a, int b) {
        const float la = logits[static_cast<std::size_t>(a)], lb = logits[static_cast<std::size_t>(b)];
        return la > lb || (la == lb && a < b);
    });
    std::vector<std::pair<int, double>> top;
    for (std::size_t i = 0; i < k; ++i)
        top.emplace_back(ids[i], std::exp(static_cast<double>(logits[static_cast<std::size_t>(ids[i])]) - mx) / sum);
    return top;
}

}  // namespace

AttentionTrace trace_attention(const Model& m, std::span<const int> prompt, std::size_t max_new_tokens,
                               std::span<const int> stop_ids) {
    const Config& c = m.config;
    check_request(c, prompt, max_new_tokens);
    if (max_new_tokens == 0) throw HarnessError("lmlab trace needs at least one new token (--max-new-tokens)");
    const std::size_t cells = trace_cells(c, prompt.size(), max_new_tokens);
    if (cells > kMaxTraceCells)
        throw HarnessError(fmt::format(
            "the page would draw {} attention cells ({} layers x {} heads x {} positions, half of them masked), more than "
            "{}: give a shorter prompt or fewer --max-new-tokens",
            cells, c.n_layers, c.n_heads, std::min(fed_positions(prompt.size(), max_new_tokens), kTraceDrawnPositions),
            kMaxTraceCells));
    const std::size_t n_fed = fed_positions(prompt.size(), max_new_tokens);
    if (c.n_layers * c.n_heads * n_fed * n_fed > kMaxTraceWeights)
        throw HarnessError(fmt::format("{} positions x {} layers x {} heads are {} attention weights to keep, more than {}: "
                                       "give a shorter prompt or fewer --max-new-tokens",
                                       n_fed, c.n_layers, c.n_heads, c.n_layers * c.n_heads * n_fed * n_fed, kMaxTraceWeights));

    AttentionTrace t;
    t.n_prompt = prompt.size();
    t.tokens.assign(prompt.begin(), prompt.end());
    // every position kept in its own row (no ring: the weights below read them all back), windows applied
    const std::size_t positions = prompt.size() + max_new_tokens;
    KVCache cache(c, positions, positions);
    cache.set_prompt_length(prompt.size());  // as generate() runs it (dynamic RoPE scaling)
    RunState s(c);
    std::vector<std::vector<std::vector<float>>> q(c.n_layers);  // q[l][position]: [n_heads * head_dim], after RoPE
    for (std::size_t p = 0; p < t.tokens.size(); ++p) {
        ContiguousRows rows(cache, p, c.head_dim());
        Trace tr = traced_forward(m, std::span<const int>(t.tokens).subspan(p, 1), rows, s);  // forward() + the copies
        for (std::size_t l = 0; l < c.n_layers; ++l) q[l].push_back(std::move(tr.layers[l].at("q")));
        const std::span<const float> logits = tr.logits;
        if (p + 1 < t.n_prompt) continue;
        TraceStep step;
        step.top = top_k(logits, kTraceTopK);
        step.chosen = step.top.front().first;  // greedy
        t.steps.push_back(step);
        const bool stop = std::find(stop_ids.begin(), stop_ids.end(), step.chosen) != stop_ids.end();
        if (t.steps.size() < max_new_tokens && !stop) t.tokens.push_back(step.chosen);  // fed next
    }

    // the weights, one query at a time, with the plain attention kernel (its scores buffer holds
    // the probabilities on return)
    const std::size_t n = t.tokens.size(), head_dim = c.head_dim(), group = c.n_heads / c.n_kv_heads;
    std::vector<float> scores(n), out(head_dim);
    t.weights.assign(c.n_layers, std::vector<std::vector<float>>(c.n_heads, std::vector<float>(n * n, 0.0f)));
    for (std::size_t l = 0; l < c.n_layers; ++l) {
        const auto keys = cache.keys(l), values = cache.values(l);
        for (std::size_t h = 0; h < c.n_heads; ++h) {
            const std::size_t kv_head = h / group;
            for (std::size_t i = 0; i < n; ++i) {
                // under a sliding window W the query at i reads i - W + 1 .. i; the rest of its row stays 0
                const std::size_t window = c.window(l), first = window && i + 1 > window ? i + 1 - window : 0;
                attention(std::span<const float>(q[l][i]).subspan(h * head_dim, head_dim), keys.subspan(kv_head * head_dim),
                          values.subspan(kv_head * head_dim), i + 1, c.kv_dim(), scores, out, KvPositions{first, 0});
                std::copy(scores.begin(), scores.begin() + static_cast<std::ptrdiff_t>(i + 1 - first),
                          t.weights[l][h].begin() + static_cast<std::ptrdiff_t>(i * n + first));
            }
        }
    }
    return t;
}

std::string token_label(const TextTokenizer* tok, int id) {
    if (!tok || id < 0 || id >= tok->vocab_size()) return fmt::format("#{}", id);
    std::string piece = tok->piece(id);
    // SentencePiece byte pieces "<0x0A>" stand for their byte: shown as it (a newline as ↵ below)
    if (piece.size() == 6 && piece.rfind("<0x", 0) == 0 && piece[5] == '>' && std::isxdigit(static_cast<unsigned char>(piece[3])) &&
        std::isxdigit(static_cast<unsigned char>(piece[4])))
        piece = std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    // special pieces (llama2.c writes BOS as "\n<s>\n"): their name without the padding whitespace
    if (piece.size() > 2 && piece.find('<') != std::string::npos && piece.find('>') != std::string::npos) {
        const auto first = piece.find_first_not_of(" \n"), last = piece.find_last_not_of(" \n");
        if (first != std::string::npos && piece[first] == '<' && piece[last] == '>') piece = piece.substr(first, last - first + 1);
    }
    const std::string text = utf8_escaped(piece);
    std::string out;
    for (char ch : text) {
        const auto b = static_cast<unsigned char>(ch);
        if (ch == ' ') out += "␣";
        else if (ch == '\n') out += "↵";
        else if (ch == '\t') out += "⇥";
        else if (b < 0x20 || b == 0x7F) out += fmt::format("\\x{:02X}", b);
        else out += ch;
    }
    return out.empty() ? fmt::format("#{}", id) : out;
}

std::string trace_html(const AttentionTrace& t, const Model& m, const TextTokenizer* tok, const std::string& model_name,
                       const std::string& prompt_text) {
    const Config& c = m.config;
    const std::size_t n = t.tokens.size();
    auto chip = [&](int id) {  // (<wbr>: a row of chips may wrap between them, never run off the page)
        return fmt::format("<span class=\"tok\" title=\"id {}\">{}</span><wbr>", id, escape(token_label(tok, id)));
    };
    std::string b = "<h1>lmlab trace: what the model looks at, and what it predicts</h1>\n";
    b += fmt::format("<p class=\"note\">model <code>{}</code>: {}, {} layers, {} query heads on {} key/value heads, head_dim {}, "
                     "dim {}, vocabulary {}, context {}. Greedy decoding; attention weights recomputed from the queries "
                     "and the KV cache (see <code>harness/report/trace.h</code>).</p>\n",
                     escape(model_name), arch_name(c.arch), c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim(), c.dim, c.vocab_size,
                     c.max_seq_len);
    b += "<h2>Prompt</h2>\n";
    if (!prompt_text.empty()) b += "<p>" + escape(prompt_text) + "</p>\n";
    b += "<p id=\"prompt-tokens\">";
    for (std::size_t i = 0; i < t.n_prompt; ++i) b += chip(t.tokens[i]);
    b += fmt::format("</p>\n<p class=\"note\">{} tokens (hover for the id). ␣ is a space, ▁ SentencePiece's word-boundary "
                     "marker, ↵ a newline.</p>\n", t.n_prompt);

    b += "<h2>Generated</h2>\n<p id=\"generated\">";
    std::vector<int> generated;
    for (const TraceStep& s : t.steps) generated.push_back(s.chosen);
    if (tok) {  // the continuation of the prompt (decode's rule: the space before its first word kept)
        const std::string text = tok->decode(generated, std::span<const int>(t.tokens).first(t.n_prompt));
        b += escape(prompt_text.empty() ? tok->decode(std::span<const int>(t.tokens).first(t.n_prompt)) : prompt_text) +
             "<b>" + escape(text) + "</b>";
    }
    b += "</p>\n<p>";
    for (int id : generated) b += chip(id);
    b += "</p>\n";

    // the top-5 at every step
    b += fmt::format("<h2>The {} most likely next tokens at each step</h2>\n<table id=\"steps\">\n<tr><th>step</th><th>after</th>"
                     "<th>chosen</th><th colspan=\"{}\">the most likely next tokens: probability (softmax of the logits)</th></tr>\n",
                     kTraceTopK, kTraceTopK);
    for (std::size_t i = 0; i < t.steps.size(); ++i) {
        const TraceStep& s = t.steps[i];
        const int after = t.tokens[t.n_prompt - 1 + i];
        b += fmt::format("<tr data-step=\"{}\"><td class=\"num\">{}</td><td>{}</td><td>{}</td>", i, i, chip(after), chip(s.chosen));
        for (const auto& [id, p] : s.top)
            b += fmt::format("<td data-id=\"{}\" data-p=\"{:.6g}\">{} {:.3f}<br><span class=\"bar\" style=\"width:{}px\"></span></td>",
                             id, p, chip(id), p, std::lround(p * 80));
        b += "</tr>\n";
    }
    b += "</table>\n";

    // attention heatmaps, layer by layer
    std::vector<std::string> labels;
    for (int id : t.tokens) labels.push_back(token_label(tok, id));
    b += fmt::format("<h2>Attention</h2>\n<p class=\"note\">One heatmap per layer and query head. Row i is the token at position "
                     "i asking; its cells are how much of its attention goes to each earlier position (a row sums to 1; "
                     "the grey triangle is the future, masked). Rows and columns after the orange line are generated "
                     "tokens. {}Hover a cell for its weight.</p>\n",
                     c.n_kv_heads < c.n_heads
                         ? fmt::format("Grouped-query attention: heads {} at a time read the same keys (kv head = head / {}). ",
                                       c.n_heads / c.n_kv_heads, c.n_heads / c.n_kv_heads)
                         : std::string());
    // past kTraceDrawnPositions, positions are drawn in blocks of b: a cell is its block's largest weight
    const std::size_t bsz = block_of(n), mm = (n + bsz - 1) / bsz;
    if (bsz > 1)
        b += fmt::format("<p class=\"note\" id=\"grouped\">{} positions: each heatmap groups them {} at a time ({} rows and "
                         "columns), a cell showing the largest weight in its block, so that the page stays small and quick "
                         "to draw. The top-{} table above has every step.</p>\n",
                         n, bsz, mm, kTraceTopK);
    std::vector<std::string> block_labels(mm);
    for (std::size_t I = 0; I < mm; ++I) {
        const std::size_t i0 = I * bsz, i1 = std::min(n, i0 + bsz) - 1;
        block_labels[I] = bsz == 1 ? labels[i0] : fmt::format("{}…{} ({}–{})", labels[i0], labels[i1], i0, i1);
    }
    const double cell = std::clamp(360.0 / static_cast<double>(mm), 6.0, 22.0);
    for (std::size_t l = 0; l < c.n_layers; ++l) {
        b += fmt::format("<h3>Layer {}</h3>\n<div style=\"display:flex;flex-wrap:wrap;gap:12px\">\n", l);
        for (std::size_t h = 0; h < c.n_heads; ++h) {
            html::HeatmapSpec spec;
            spec.id = fmt::format("attention.layer{}.head{}", l, h);
            spec.title = fmt::format("layer {}, head {}{}", l, h,
                                     c.n_kv_heads < c.n_heads ? fmt::format(" (kv head {})", h / (c.n_heads / c.n_kv_heads)) : "");
            spec.rows = spec.cols = mm;
            spec.values.assign(mm * mm, -1.0);  // -1: masked (the future)
            const auto& w = t.weights[l][h];
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t j = 0; j <= i; ++j) {
                    double& v = spec.values[(i / bsz) * mm + j / bsz];
                    v = std::max(v, static_cast<double>(w[i * n + j]));
                }
            spec.row_labels = spec.col_labels = block_labels;
            spec.row_axis = "query (position asking)";
            spec.col_axis = "key (position attended to)";
            spec.lo = 0;
            spec.hi = 1;
            spec.cell = cell;
            spec.divider = t.n_prompt < n && t.n_prompt % bsz == 0 ? t.n_prompt / bsz : 0;
            spec.legend_unit = "attention weight";
            spec.tooltip = [&](std::size_t I, std::size_t J) {
                const double v = spec.values[I * mm + J];
                return bsz == 1 ? fmt::format("{} (position {}) → {} (position {}): {:.3f}", labels[I], I, labels[J], J, v)
                                : fmt::format("{} → {}: largest weight {:.3f}", block_labels[I], block_labels[J], v);
            };
            b += "<figure>\n" + html::heatmap(spec) + "</figure>\n";
        }
        b += "</div>\n";
    }
    return html::page("lmlab trace", b);
}

}  // namespace lmlab
