using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;
using static SensMerging.Strategies.Interpolation.Temporaries;

namespace SensMerging.Strategies.Interpolation;

/// <summary>
/// Multi-SLERP (mergekit <c>multislerp</c>): barycentric interpolation on the hypersphere. With v_i the models (minus the
/// base when there is one), n_i = |v_i|, weights w_i (normalized to sum 1 unless <c>normalize_weights: false</c>) and
/// unit vectors u_i = v_i / (n_i + eps): m = sum w_i u_i; the tangent-space interpolation at m / |m| sums to zero
/// exactly (sum w_i (u_i - (u_i . m^) m^) = m - |m| m^), so the exponential map lands on m^ and the result is
/// <c>base + (sum w_i n_i) m / |m|</c>; mergekit's code computes the same up to rounding. |m| &lt; eps falls back to the
/// weighted sum for two models and is an error for more, as in mergekit; one model is returned as it is.
/// Streams: one statistics pass gathers the Gram matrix of the v_i (<see cref="BlockGram"/>, double), then every block
/// is a weighted sum of the v_i. With a half-precision <see cref="MergeTensorRequest.ComputeDType"/> it runs mergekit's
/// torch operations in that dtype on whole tensors instead (<see cref="StrategyTraits.RoundsIntermediates"/>; see
/// <see cref="MergeInComputeDType"/>).
/// </summary>
public sealed class MultiSlerpStrategy : IStreamingMergeStrategy
{
    public string Name => "multislerp";

    public string Description => "Barycentre of the models on the hypersphere (around the base when given), scaled by their weighted mean norm.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("weight", null, ParameterScope.PerModel, "Weight of the model in the barycentre."),
        ParameterSpec.Boolean("normalize_weights", true, ParameterScope.Global, "Divide the weights by their sum."),
        ParameterSpec.Float("eps", 1e-8, ParameterScope.Global, "Added to norms before dividing by them.", min: 0),
    ];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: false, MinModels: 1, Elementwise: false) { RoundsIntermediates = true };

    public void Merge(MergeTensorRequest request) => WholeTensor.Merge(this, request, MergeInComputeDType);

    /// <summary>
    /// mergekit a6e4028's multislerp on tensors of the compute dtype, each torch operation rounding its result: the models
    /// stacked (in the config's order; mergekit's is a Python set's), minus the base; the weights a tensor of the dtype
    /// (each weight rounded), divided by their sum; <c>norms = norm(v, dim=-1)</c>; <c>u = v / (norms + eps)</c>;
    /// <c>mean = (u * w).sum(0)</c> (a float32 sum over the models, rounded once); <c>mean / norm(mean)</c>, or where
    /// <c>norm(mean) &lt; eps</c> (eps cast to the dtype) <c>v_0 w_0 + v_1 w_1</c> for two models and an error for more;
    /// <c>dots = (u * mean).sum(-1)</c>; tangents <c>u - dots * mean</c>; <c>r = (tangents * w).sum(0)</c>;
    /// <c>n = norm(r) + eps</c>; <c>(mean cos n + r (sin n / n)) * (norms * w).sum()</c>; plus the base. Norms and sums
    /// over a tensor are torch's float32 accumulations, rounded once.
    /// </summary>
    private static void MergeInComputeDType(MergeTensorRequest request)
    {
        var dtype = request.ComputeDType;
        var k = request.Models.Count;
        using var noGrad = torch.no_grad();
        if (k == 1)
        {
            request.Output.copy_(request.Models[0]); // mergekit returns a single model as it is
            return;
        }
        var eps = request.Parameters.Float("eps");
        // Small values (weights, norms) stay in this scope; whole-tensor temporaries are freed as soon as they are used.
        using var scope = torch.NewDisposeScope();
        // The casts are exact: the host already rounded the inputs to the dtype.
        torch.Tensor stacked;
        {
            var casts = request.Models.Select(m => m.to(dtype)).ToArray();
            stacked = torch.stack(casts);
            foreach (var cast in casts)
            {
                cast.Dispose();
            }
        }
        var baseTensor = request.Base?.to(dtype);
        if (baseTensor is not null)
        {
            stacked.sub_(baseTensor); // mergekit's tensors -= base_tensor
        }
        var flat = stacked.view(k, -1);
        // torch.tensor(weights, dtype=...): each Python float converted to float32, then to the dtype.
        var weights = torch.tensor(request.Weights.Select(w => (float)w).ToArray()).to(dtype);
        if (request.Parameters.Boolean("normalize_weights"))
        {
            var sum = weights.sum();
            if (sum.to(torch.ScalarType.Float32).item<float>() == 0)
            {
                throw new ArgumentException(
                    $"multislerp: the weights of tensor '{request.TensorName}' sum to zero in {dtype}; they cannot be normalized", nameof(request));
            }
            weights = weights.div(sum);
        }
        var columnWeights = weights.view(-1, 1);
        var norms = torch.linalg.vector_norm(flat, 2, [-1L], keepdim: true);
        var unit = flat.div(norms.add(eps));
        var mean = SumOfProducts(unit, columnWeights, 0L, keepdim: false);
        var meanNorm = torch.linalg.vector_norm(mean);
        torch.Tensor result;
        if (meanNorm.lt(eps).item<bool>())
        {
            unit.Dispose();
            mean.Dispose();
            if (k != 2)
            {
                throw new InvalidOperationException(
                    $"multislerp: tensor '{request.TensorName}': the weighted sum of the models' directions is zero (antipodal models with balancing weights); use other weights.");
            }
            using var first = stacked[0].mul(weights[0]);
            using var second = stacked[1].mul(weights[1]);
            result = first.add(second);
        }
        else
        {
            mean = Replace(mean, mean.div(meanNorm));
            var dots = SumOfProducts(unit, mean, -1L, keepdim: true);
            torch.Tensor tangent;
            using (var projected = dots.mul(mean))
            using (var tangents = unit.sub(projected))
            {
                unit.Dispose();
                tangent = SumOfProducts(tangents, columnWeights, 0L, keepdim: false);
            }
            var tangentNorm = torch.linalg.vector_norm(tangent).add(eps);
            using (var along = mean.mul(tangentNorm.cos()))
            using (var across = tangent.mul(tangentNorm.sin().div(tangentNorm)))
            {
                mean.Dispose();
                tangent.Dispose();
                result = along.add(across);
            }
            var averageNorm = norms.squeeze(-1).mul(weights).sum();
            result = Replace(result, result.mul(averageNorm));
            result = Replace(result, result.view(stacked.shape[1..]));
        }
        stacked.Dispose();
        if (baseTensor is not null)
        {
            result = Replace(result, result.add(baseTensor));
        }
        request.Output.copy_(result);
        result.Dispose();
    }

    /// <summary><c>(x * y).sum(dim)</c> (the product rounded, then torch's float32 sum rounded once), the product freed.</summary>
    private static torch.Tensor SumOfProducts(torch.Tensor x, torch.Tensor y, long dim, bool keepdim)
    {
        using var product = x.mul(y);
        return product.sum(dim, keepdim: keepdim);
    }

    public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
    {
        RequestChecks.Check(tensor, Name, Traits);
        var weights = tensor.Weights.ToArray();
        if (tensor.Parameters.Boolean("normalize_weights"))
        {
            var sum = weights.Sum();
            if (sum == 0)
            {
                throw new ArgumentException($"multislerp: the weights of tensor '{tensor.TensorName}' sum to zero; they cannot be normalized", nameof(tensor));
            }
            weights = [.. weights.Select(w => w / sum)];
        }
        return new Session(tensor.TensorName, weights, tensor.Parameters.Float("eps"));
    }

    /// <summary>The coefficient of each v_i in the result (before the base is added), from their Gram matrix.</summary>
    public static double[] Coefficients(int k, Func<int, int, double> gram, double[] weights, double eps, string tensorName)
    {
        ArgumentNullException.ThrowIfNull(gram);
        ArgumentNullException.ThrowIfNull(weights);
        var norms = Enumerable.Range(0, k).Select(i => Math.Sqrt(Math.Max(0, gram(i, i)))).ToArray();
        var unit = Enumerable.Range(0, k).Select(i => weights[i] / (norms[i] + eps)).ToArray();
        double meanSquare = 0;
        for (var i = 0; i < k; i++)
        {
            for (var j = 0; j < k; j++)
            {
                meanSquare += unit[i] * unit[j] * gram(i, j);
            }
        }
        var meanNorm = Math.Sqrt(Math.Max(0, meanSquare));
        if (meanNorm < eps)
        {
            if (k == 2)
            {
                return [weights[0], weights[1]];
            }
            throw new InvalidOperationException(
                $"multislerp: tensor '{tensorName}': the weighted sum of the models' directions is zero (antipodal models with balancing weights); use other weights.");
        }
        var averageNorm = norms.Select((n, i) => n * weights[i]).Sum();
        return [.. unit.Select(u => averageNorm * u / meanNorm)];
    }

    private sealed class Session(string tensorName, double[] weights, double eps) : ITensorMergeSession
    {
        private BlockGram? _gram;
        private double[]? _coefficients;

        public bool BeginPass(int pass)
        {
            if (weights.Length == 1)
            {
                return false;
            }
            if (pass == 0)
            {
                return true;
            }
            _coefficients ??= Coefficients(weights.Length, _gram!.Sum, weights, eps, tensorName);
            return false;
        }

        public void Observe(MergeTensorRequest block)
        {
            _gram ??= new BlockGram(block.Models.Count);
            _gram.Add(block.Models, block.Base, block.ElementStart);
        }

        public void Merge(MergeTensorRequest block)
        {
            using var noGrad = torch.no_grad();
            if (weights.Length == 1)
            {
                block.Output.copy_(block.Models[0]); // mergekit returns a single model as it is
                return;
            }
            var coefficients = _coefficients ?? throw new InvalidOperationException(
                $"multislerp: tensor '{block.TensorName}': Merge was called before the statistics pass ended.");
            var delta = block.Scratch.Rent(block.Output.dtype);
            if (block.Base is null)
            {
                block.Output.zero_();
            }
            else
            {
                block.Output.copy_(block.Base);
            }
            for (var i = 0; i < block.Models.Count; i++)
            {
                delta.copy_(block.Models[i]);
                if (block.Base is not null)
                {
                    delta.sub_(block.Base);
                }
                block.Output.add_(delta, alpha: coefficients[i]);
            }
        }

        public void Dispose()
        {
        }
    }
}
