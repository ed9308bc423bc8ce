// Replaced by the routing core (issue 3).
namespace parley::routing {}
