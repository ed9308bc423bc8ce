// Replaced by the configuration parser.
namespace parley::config {}
