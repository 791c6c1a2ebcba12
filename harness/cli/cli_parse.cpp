#include "harness/cli/cli_parse.h"

#include <stdexcept>

namespace lmlab {

std::vector<int> parse_ids(const std::string& text) {
    if (text.find_first_not_of(" ,") == std::string::npos)
        throw std::invalid_argument("--prompt-ids is empty: give at least one id, e.g. 1 (BOS)");
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
            } catch (const std::exception&) {
                used = 0;
            }
            if (item.empty() || used != item.size())
                throw std::invalid_argument("--prompt-ids: '" + item + "' is not one integer (expected ids separated by "
                                            "commas, e.g. 1,403,407)");
            ids.push_back(v);
            item.clear();
        } else {
            item += text[i];
        }
    }
    return ids;
}

}  // namespace lmlab
