using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using static TorchSharp.torch;

namespace SensMerging.Runtime.Tests;

/// <summary>
/// <see cref="LlamaModel.BackwardLayerwise"/> (one block at a time, each gradient handed over and freed at once) gives
/// the gradients of a full <c>loss.backward()</c>: per weight, sum |theta x grad| and sum grad^2 agree to 1e-5 relative.
/// </summary>
public sealed class LayerwiseGradientTests : IDisposable
{
    private readonly TempFolder _temp = new();

    public void Dispose() => _temp.Dispose();

    [Theory]
    [MemberData(nameof(ArchitectureReferenceTests.Cases), MemberType = typeof(ArchitectureReferenceTests))]
    public async Task Layerwise_gradients_equal_a_full_backward(string name, string dtype, string configJson)
    {
        var configPath = Path.Combine(_temp.Path, name + ".config.json");
        var dir = await ReferencePython.MakeModelAsync(_temp.Sub(name), configPath, configJson, 5, dtype);
        using var model = new LlamaRuntime().LoadLlama(dir, new ModelLoadOptions(RequiresGrad: true), CancellationToken.None);
        var count = model.NamedWeights.Count;
        foreach (var text in new[] { "<s> a b c d e f g h i j k l m n", "<s> z y x w v u" })
        {
            var sample = model.Tokenizer.Encode(new TextSample(text), 64);

            // The in-memory path: full backward into .grad.
            model.ZeroGradients();
            double fullLoss;
            using (var scope = NewDisposeScope())
            {
                var loss = model.Loss(sample);
                fullLoss = loss.item<float>();
                loss.backward();
            }
            var full = new (double Taylor, double Fisher)[count];
            using (no_grad())
            {
                for (var k = 0; k < count; k++)
                {
                    using var scope = NewDisposeScope();
                    var (_, weight) = model.NamedWeights[k];
                    full[k] = Statistics(weight, weight.grad!);
                }
            }
            model.ZeroGradients();

            var layerwise = new (double Taylor, double Fisher)[count];
            var calls = new int[count];
            var handed = new List<Tensor>();
            var layerwiseLoss = model.BackwardLayerwise(sample, (k, weight, gradient) =>
            {
                Assert.Same(model.NamedWeights[k].Weight, weight);
                Assert.Equal(weight.shape, gradient.shape);
                Assert.False(gradient.requires_grad);
                calls[k]++;
                layerwise[k] = Statistics(weight, gradient);
                handed.Add(gradient);
            }, CancellationToken.None);

            Assert.Equal(fullLoss, layerwiseLoss, 5);
            Assert.All(calls, c => Assert.Equal(1, c));
            // Every gradient handed over is already freed, and nothing was accumulated into .grad.
            Assert.All(handed, g => Assert.True(g.IsInvalid, "a handed gradient outlived the pass"));
            Assert.All(model.NamedWeights, w => Assert.True(w.Weight.grad is null || w.Weight.grad.abs().max().item<float>() == 0));
            for (var k = 0; k < count; k++)
            {
                var weightName = model.NamedWeights[k].Name;
                Assert.True(full[k].Taylor > 0, $"{name} {weightName}: zero gradient statistic");
                Assert.True(Math.Abs(layerwise[k].Taylor - full[k].Taylor) <= 1e-5 * full[k].Taylor,
                    $"{name} {weightName}: |w g| layerwise {layerwise[k].Taylor:G9} vs full {full[k].Taylor:G9}");
                Assert.True(Math.Abs(layerwise[k].Fisher - full[k].Fisher) <= 1e-5 * full[k].Fisher,
                    $"{name} {weightName}: g^2 layerwise {layerwise[k].Fisher:G9} vs full {full[k].Fisher:G9}");
            }
        }
    }

    [Fact]
    public void Layerwise_backward_needs_gradients_and_loss_positions()
    {
        var dir = _temp.Sub("m");
        new TinyModel(TinyModel.SmallConfig(), seed: 3).Write(dir);
        using (var frozen = new LlamaRuntime().LoadLlama(dir, new ModelLoadOptions(), CancellationToken.None))
        {
            var sample = frozen.Tokenizer.Encode(new TextSample("<s> a b c"), 16);
            Assert.Throws<InvalidOperationException>(() => frozen.BackwardLayerwise(sample, (_, _, _) => { }, CancellationToken.None));
        }
        using var model = new LlamaRuntime().LoadLlama(dir, new ModelLoadOptions(RequiresGrad: true), CancellationToken.None);
        var empty = new TokenizedSample([1, 5, 6], [false, false, false]);
        Assert.Throws<ArgumentException>(() => model.BackwardLayerwise(empty, (_, _, _) => { }, CancellationToken.None));
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        var real = model.Tokenizer.Encode(new TextSample("<s> a b c"), 16);
        Assert.Throws<OperationCanceledException>(() => model.BackwardLayerwise(real, (_, _, _) => { }, cancelled.Token));
    }

    private static (double Taylor, double Fisher) Statistics(Tensor weight, Tensor gradient)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var w = weight.detach().to_type(ScalarType.Float64);
        var g = gradient.to_type(ScalarType.Float64);
        return ((w * g).abs().sum().item<double>(), (g * g).sum().item<double>());
    }
}
