// What the CLI parses itself (CLI11 parses the options): the --prompt-ids list (harness/cli/options.h)
// and a stage table model field with its int8 suffix ("models/x.h5#q8_0,group=32",
// parse_model_spec in harness/stages/stages.h). Input: first byte chooses, the rest is the text.
#include <stdexcept>

#include "harness/cli/options.h"
#include "harness/fixture.h"
#include "fuzz/fuzz.h"
#include "harness/stages/stages.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
    try {
        if (data[0] & 1) {
            const std::vector<int> ids = lmlab::parse_ids(text);
            if (ids.empty()) std::abort();  // parse_ids promises at least one id
        } else {
            const lmlab::ModelSpec spec = lmlab::parse_model_spec(text);
            if (spec.path.size() > text.size()) std::abort();
        }
    } catch (const lmlab::UsageError&) {  // a bad --prompt-ids list
    } catch (const lmlab::HarnessError&) {  // a bad model field
    }
    return 0;
}
