// Provides std::ios_base_library_init() under symbol version GLIBCXX_3.4.32 for systems whose
// libstdc++ (GCC 12 and older) predates it. GCC 13 emits a reference to this symbol from every
// translation unit that includes <iostream>; its only job is to construct the standard streams,
// which a static std::ios_base::Init does here. See docs/libstdcxx-shim.md.
#include <ios>

namespace std {
void ios_base_library_init() {
    static ios_base::Init init;
}
}
