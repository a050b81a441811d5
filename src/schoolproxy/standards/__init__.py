"""Evidence for the DfE filtering and monitoring standards (SPEC 5.9), produced by the product itself:
the checks log, the annual review pack, unblock requests and the acceptable-use notice."""
