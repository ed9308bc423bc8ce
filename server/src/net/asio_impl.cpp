// Asio and Beast are header-only by default; compiling their implementation
// once here (BOOST_*_SEPARATE_COMPILATION) keeps every other translation unit fast.
#include <boost/asio/impl/src.hpp>
#include <boost/beast/src.hpp>
