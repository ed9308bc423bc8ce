// Replaced by the storage backends (issue 4).
namespace parley::storage {}
