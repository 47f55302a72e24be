using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Strategies.ModelStock;

public sealed class ModelStockPlugin : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, ModelStockStrategy>();
}

/// <summary>
/// Model Stock: with task vectors d_i = x_i - base (whole tensor, flattened), cos = mean pairwise cosine similarity
/// (norm product floored at 1e-6, each cosine clamped to [-1, 1]), k = number of models,
/// t = k cos / (1 + (k - 1) cos), and <c>out = t * avg_w(x) + (1 - t) * base</c> with the weights normalized to sum 1.
/// When the denominator vanishes (cos = -1/(k-1)) the result is the base.
/// </summary>
public sealed class ModelStockStrategy : IMergeStrategy
{
    /// <summary>Floor of the norm product in the cosine (mergekit's clamp).</summary>
    public const double NormProductFloor = 1e-6;

    public string Name => "model_stock";

    public string Description => "Model Stock: moves from the base toward the weighted average of the models by t = k cos / (1 + (k - 1) cos).";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("weight", 1.0, ParameterScope.PerModel, "Weight of the model in the average (weights are normalized)."),
    ];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, MinModels: 2, Elementwise: false);

    public void Merge(MergeTensorRequest request)
    {
        var baseTensor = RequestChecks.Check(request, Name, Traits)!;
        var count = request.Models.Count;
        double weightSum = 0;
        foreach (var w in request.Weights)
        {
            weightSum += w;
        }
        if (Math.Abs(weightSum) < 1e-12)
        {
            throw new ArgumentException($"model_stock: the weights of tensor '{request.TensorName}' sum to zero; they cannot be normalized", nameof(request));
        }

        using var noGrad = torch.no_grad();
        var deltas = new Tensor[count];
        for (var i = 0; i < count; i++)
        {
            deltas[i] = request.Scratch.Rent(request.Output.dtype);
        }

        using var scope = torch.NewDisposeScope();
        var norms = new double[count];
        var flats = new Tensor[count];
        for (var i = 0; i < count; i++)
        {
            deltas[i].copy_(request.Models[i]).sub_(baseTensor);
            norms[i] = deltas[i].norm().ToDouble();
            flats[i] = deltas[i].reshape(-1);
        }
        double cosSum = 0;
        var pairs = 0;
        for (var i = 0; i < count; i++)
        {
            for (var j = i + 1; j < count; j++)
            {
                var dot = flats[i].dot(flats[j]).ToDouble();
                cosSum += Math.Clamp(dot / Math.Max(norms[i] * norms[j], NormProductFloor), -1.0, 1.0);
                pairs++;
            }
        }
        var t = Ratio(cosSum / pairs, count);

        // t * sum(w_i x_i)/sum(w) + (1 - t) * base = base + t * sum((w_i / sum(w)) * d_i)
        var output = request.Output;
        output.copy_(baseTensor);
        for (var i = 0; i < count; i++)
        {
            output.add_(deltas[i], alpha: t * request.Weights[i] / weightSum);
        }
    }

    /// <summary>The interpolation ratio t for mean cosine <paramref name="cos"/> and <paramref name="k"/> models.</summary>
    public static double Ratio(double cos, int k)
    {
        var denominator = 1 + (k - 1) * cos;
        return Math.Abs(denominator) < 1e-12 ? 0.0 : k * cos / denominator;
    }
}
