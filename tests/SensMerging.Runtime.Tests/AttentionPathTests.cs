using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using static TorchSharp.torch;

namespace SensMerging.Runtime.Tests;

/// <summary>The fused (scaled_dot_product_attention) and explicit attention paths give the same logits and gradients.</summary>
[Collection(nameof(MemoryCollection))]
public sealed class AttentionPathTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose()
    {
        LlamaAttention.UseFusedAttention = true;
        _temp.Dispose();
    }

    [Theory]
    [InlineData(null)]
    [InlineData(3)]
    public void Fused_and_explicit_attention_agree(int? window)
    {
        var tiny = new TinyModel(TinyModel.SmallConfig(slidingWindow: window, type: window is null ? "llama" : "mistral"), seed: 21);
        var dir = _temp.Sub("m");
        tiny.Write(dir);
        using var model = LlamaModel.Load(dir, new ModelLoadOptions(Dtype: ScalarType.Float64, RequiresGrad: true), CancellationToken.None);
        long[] ids = [1, 4, 8, 15, 16, 23, 4, 2];
        var sample = new TokenizedSample(ids, ids.Select((_, i) => i < ids.Length - 1).ToArray());
        var (fusedLoss, fusedGrad) = LossAndGrad(model, sample, fused: true);
        var (plainLoss, plainGrad) = LossAndGrad(model, sample, fused: false);
        Assert.Equal(plainLoss, fusedLoss, 10);
        for (var i = 0; i < plainGrad.Length; i++)
        {
            Assert.Equal(plainGrad[i], fusedGrad[i], 10);
        }
    }

    private static (double Loss, double[] Grad) LossAndGrad(LlamaModel model, TokenizedSample sample, bool fused)
    {
        LlamaAttention.UseFusedAttention = fused;
        model.ZeroGradients();
        using var loss = model.Loss(sample);
        loss.backward();
        var weight = model.NamedWeights.First(w => w.Name == "model.layers.0.self_attn.k_proj.weight").Weight;
        using var grad = weight.grad!;
        return (loss.item<double>(), grad.data<double>().ToArray());
    }
}
