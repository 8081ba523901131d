"""The steps of :func:`tiemb.optimize`, one module each, in the order it runs them:

* :mod:`.load`: the model, loaded once (SavedModel signature frozen, or a GraphDef), its inputs and outputs;
* :mod:`.test_data`: input_shapes matched to the inputs, test data checked or generated;
* :mod:`.analyse`: the lookups the rewriter finds and the engine sizes they need;
* :mod:`.rewrite`: the rewritten model staged in a work directory, its dense backend chosen
  (:mod:`tiemb.backends`);
* :mod:`.save`: where the result goes, moved into place atomically;
* :mod:`.verify`: the outputs of the model at the save path against the original's;
* :mod:`.measure`: both models timed side by side (:mod:`tiemb.timing`);
* :mod:`.report`: the :class:`tiemb.OptimizedReport`.

Graphs run through :mod:`tiemb.runner`; settings come in as :class:`tiemb.settings.Settings`.
"""
