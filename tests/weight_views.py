"""A check shared by the streaming tests: a streamed model's weight views equal a loaded model's, bit for bit."""

import torch

from mechit.arch import weights as views


def assert_weight_views_equal(streamed, loaded, layers) -> None:
    """Every per-layer weight view of ``layers`` and the embeddings of ``streamed`` equal ``loaded``'s exactly."""
    for layer in layers:
        for view in (views.qk_weights, views.ov_weights, views.mlp_in_weights):
            for got, want in zip(view(streamed, layer), view(loaded, layer)):
                assert torch.equal(got, want), (view.__name__, layer)
        assert torch.equal(views.mlp_out_weights(streamed, layer), views.mlp_out_weights(loaded, layer))
    assert torch.equal(views.unembedding(streamed), views.unembedding(loaded))
    assert torch.equal(views.input_embedding(streamed), views.input_embedding(loaded))
