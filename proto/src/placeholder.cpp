// Replaced by the protocol codec.
namespace parley::proto {}
