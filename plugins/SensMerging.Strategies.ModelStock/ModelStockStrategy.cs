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
/// Streams (<see cref="IStreamingMergeStrategy"/>): one statistics pass gathers the task vectors' Gram matrix
/// (<see cref="BlockGram"/>, double precision), then every block is <c>base + sum_i t w_i / sum(w) * d_i</c>; the
/// whole-tensor merge runs the same code over one block. With a half-precision <see cref="MergeTensorRequest.ComputeDType"/>
/// and equal weights (mergekit's model_stock has none: a plain average) it runs mergekit's torch operations in that
/// dtype instead, on whole tensors (<see cref="StrategyTraits.RoundsIntermediates"/>); unequal weights keep the float32
/// computation, rounded once.
/// </summary>
public sealed class ModelStockStrategy : IStreamingMergeStrategy
{
    /// <summary>Floor of the norm product in the cosine (mergekit's clamp).</summary>
    public const double NormProductFloor = 1e-6;

    public string Name => "model_stock";

    public string Description => "Model Stock: moves from the base toward the weighted average of the models by t = k cos / (1 + (k - 1) cos).";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("weight", 1.0, ParameterScope.PerModel, "Weight of the model in the average (weights are normalized)."),
        ParameterSpec.Boolean("filter_wise", false, ParameterScope.Global,
            "One t per row (output filter) of the tensor, from the rows' cosines, instead of one per tensor (mergekit's filter_wise)."),
    ];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, MinModels: 2, Elementwise: false) { RoundsIntermediates = true };

    public void Merge(MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.ComputesInHalfPrecision && request.Base is not null && request.Weights.All(w => w == request.Weights[0]))
        {
            RequestChecks.Check(request, Name, Traits);
            MergeInComputeDType(request, request.Base);
            return;
        }
        WholeTensor.Merge(this, request);
    }

    /// <summary>
    /// mergekit's model_stock on tensors of the compute dtype, each operation rounding its result: the task vectors
    /// <c>o_i = x_i - base</c> (flattened, or rows with filter_wise; a 1-D tensor is one row); per pair
    /// <c>((o_i * o_j).sum(-1) / (norm(o_i) * norm(o_j)).clamp(min=1e-6)).clamp(-1, 1)</c> (sums and norms accumulated in
    /// float32 by torch and rounded once, the bound cast to the dtype); their mean; <c>t = (N cos) / (1 + (N - 1) cos)</c>
    /// with N a Python int (a float32 factor); Python's <c>sum(ws) / N</c> (0 + x_0 + x_1 ..., each addition rounded);
    /// <c>t * avg + (1 - t) * base</c>. Where the denominator is 0 (cos = -1/(N - 1), mergekit divides by it) t is 0, as in
    /// float32.
    /// </summary>
    private static void MergeInComputeDType(MergeTensorRequest request, Tensor baseTensor)
    {
        var dtype = request.ComputeDType;
        var k = request.Models.Count;
        var filterWise = request.Parameters.Boolean("filter_wise");
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        // mergekit's shapes: flattened, or rows along the last dimension (a 1-D tensor is one row). Casts are exact: the
        // host already rounded the inputs to the dtype. The cast's own handle is released so that disposing the view
        // frees the storage.
        Tensor Shaped(Tensor x)
        {
            using var cast = x.to(dtype);
            return Rows(cast, filterWise);
        }
        var w0 = Shaped(baseTensor);
        // The offsets in place of the casts (the same rounding as out of place): k whole tensors of the dtype.
        var offsets = request.Models.Select(m => Shaped(m).sub_(w0)).ToArray();
        var norms = offsets.Select(o => torch.linalg.vector_norm(o, 2, [-1L])).ToArray();
        var cosines = new List<Tensor>();
        for (var i = 0; i < k; i++)
        {
            for (var j = i + 1; j < k; j++)
            {
                Tensor dot;
                using (var product = offsets[i].mul(offsets[j]))
                {
                    dot = product.sum(-1L);
                }
                cosines.Add(dot.div(norms[i].mul(norms[j]).clamp_min(NormProductFloor)).clamp(-1, 1));
            }
        }
        foreach (var offset in offsets)
        {
            offset.Dispose();
        }
        var cos = torch.stack(cosines).mean([0L]).unsqueeze(-1);
        var denominator = cos.mul(k - 1).add(1);
        var t = cos.mul(k).div(denominator).masked_fill(denominator.eq(0), 0);

        // The blend is elementwise: in chunks along the first dimension (elements, or rows), reading the models again.
        var models = request.Models.Select(m => Rows(m, filterWise)).ToArray();
        var contiguous = request.Output.is_contiguous();
        var output = contiguous ? request.Output.view(w0.shape) : torch.empty(w0.shape, request.Output.dtype);
        var length = w0.shape[0];
        var perSlice = w0.numel() / Math.Max(length, 1);
        var chunk = Math.Max(1, BlendChunk / Math.Max(perSlice, 1));
        for (long start = 0; start < length; start += chunk)
        {
            using var chunkScope = torch.NewDisposeScope();
            var count = Math.Min(chunk, length - start);
            var tc = t.shape[0] == 1 ? t : t.narrow(0, start, count);
            var sum = models[0].narrow(0, start, count).to(dtype).add(0); // Python's sum(ws) starts from the int 0
            for (var i = 1; i < k; i++)
            {
                sum = sum.add(models[i].narrow(0, start, count).to(dtype));
            }
            var merged = tc.mul(sum.div(k)).add(tc.neg().add(1).mul(w0.narrow(0, start, count)));
            output.narrow(0, start, count).copy_(merged);
        }
        if (!contiguous)
        {
            request.Output.copy_(output.view(request.Output.shape));
        }
    }

    /// <summary>mergekit's view of a tensor: flattened, or (filter_wise) rows along the last dimension.</summary>
    private static Tensor Rows(Tensor x, bool filterWise) =>
        !filterWise ? x.reshape(-1) : x.dim() == 1 ? x.unsqueeze(0) : x.reshape(-1, x.shape[^1]);

    /// <summary>Elements per chunk of the blend (temporaries of a few MB each).</summary>
    private const long BlendChunk = 1L << 20;

    public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
    {
        RequestChecks.Check(tensor, Name, Traits);
        double weightSum = 0;
        foreach (var w in tensor.Weights)
        {
            weightSum += w;
        }
        if (Math.Abs(weightSum) < 1e-12)
        {
            throw new ArgumentException($"model_stock: the weights of tensor '{tensor.TensorName}' sum to zero; they cannot be normalized", nameof(tensor));
        }
        var filterWise = tensor.Parameters.Boolean("filter_wise");
        // mergekit: a 1-D tensor is one row; otherwise rows run along the last dimension.
        var columns = filterWise && tensor.Shape.Count >= 2 ? tensor.Shape[^1] : 0;
        return columns > 0
            ? new RowSession(this, tensor.Weights, weightSum, tensor.ElementCount, columns)
            : new Session(this, tensor.Weights, weightSum);
    }

    /// <summary>The interpolation ratio t for mean cosine <paramref name="cos"/> and <paramref name="k"/> models.</summary>
    public static double Ratio(double cos, int k)
    {
        var denominator = 1 + (k - 1) * cos;
        return Math.Abs(denominator) < 1e-12 ? 0.0 : k * cos / denominator;
    }

    /// <summary>t from the task vectors' Gram matrix: the mean pairwise cosine, then <see cref="Ratio"/>.</summary>
    public static double RatioOf(BlockGram gram)
    {
        ArgumentNullException.ThrowIfNull(gram);
        return RatioOf(gram.Vectors, gram.Sum);
    }

    /// <summary>t from a Gram matrix given by <paramref name="sum"/>(i, j) over <paramref name="k"/> task vectors.</summary>
    public static double RatioOf(int k, Func<int, int, double> sum)
    {
        ArgumentNullException.ThrowIfNull(sum);
        double cosSum = 0;
        var pairs = 0;
        for (var i = 0; i < k; i++)
        {
            for (var j = i + 1; j < k; j++)
            {
                cosSum += Math.Clamp(sum(i, j) / Math.Max(Math.Sqrt(sum(i, i)) * Math.Sqrt(sum(j, j)), NormProductFloor), -1.0, 1.0);
                pairs++;
            }
        }
        return Ratio(cosSum / pairs, k);
    }

    /// <summary>filter_wise: one Gram matrix per row (<see cref="SegmentedGram"/>), so one t per row.</summary>
    private sealed class RowSession(ModelStockStrategy strategy, IReadOnlyList<double> weights, double weightSum, long elements, long columns) : ITensorMergeSession
    {
        private readonly SegmentedGram _gram = new(weights.Count, elements / columns, e => e / columns);
        private double[]? _t;

        public bool BeginPass(int pass)
        {
            if (pass == 0)
            {
                return true;
            }
            _t ??= [.. Enumerable.Range(0, (int)_gram.Segments).Select(r => RatioOf(weights.Count, (i, j) => _gram.Sum(r, i, j)))];
            return false;
        }

        public void Observe(MergeTensorRequest block)
        {
            var baseBlock = RequestChecks.Check(block, strategy.Name, strategy.Traits)!;
            _gram.Add(block.Models, baseBlock, block.ElementStart);
        }

        public void Merge(MergeTensorRequest block)
        {
            var baseBlock = RequestChecks.Check(block, strategy.Name, strategy.Traits)!;
            var t = _t ?? throw new InvalidOperationException(
                $"model_stock: tensor '{block.TensorName}': Merge was called before the statistics pass ended (call BeginPass until it returns false).");
            using var noGrad = torch.no_grad();
            // base + t_row * sum((w_i / sum(w)) * d_i); rented tensors stay out of the dispose scope (the scratch owns them)
            var delta = block.Scratch.Rent(block.Output.dtype);
            var mixed = block.Scratch.Rent(block.Output.dtype);
            using var scope = torch.NewDisposeScope();
            var ratio = _gram.Expand(t, block.ElementStart, block.Output);
            mixed.zero_();
            for (var i = 0; i < block.Models.Count; i++)
            {
                delta.copy_(block.Models[i]).sub_(baseBlock);
                mixed.add_(delta, alpha: weights[i] / weightSum);
            }
            // mul_ then add_ (addcmul_'s roundings with value 1) without a Scalar operand; see NuSlerpStrategy.
            block.Output.copy_(baseBlock).add_(mixed.mul_(ratio));
        }

        public void Dispose()
        {
        }
    }

    private sealed class Session(ModelStockStrategy strategy, IReadOnlyList<double> weights, double weightSum) : ITensorMergeSession
    {
        private readonly BlockGram _gram = new(weights.Count);
        private double? _t;

        public bool BeginPass(int pass)
        {
            if (pass == 0)
            {
                return true;
            }
            _t ??= RatioOf(_gram);
            return false;
        }

        public void Observe(MergeTensorRequest block)
        {
            var baseBlock = RequestChecks.Check(block, strategy.Name, strategy.Traits)!;
            _gram.Add(block.Models, baseBlock, block.ElementStart);
        }

        public void Merge(MergeTensorRequest block)
        {
            var baseBlock = RequestChecks.Check(block, strategy.Name, strategy.Traits)!;
            var t = _t ?? throw new InvalidOperationException(
                $"model_stock: tensor '{block.TensorName}': Merge was called before the statistics pass ended (call BeginPass until it returns false).");
            using var noGrad = torch.no_grad();
            // t * sum(w_i x_i)/sum(w) + (1 - t) * base = base + t * sum((w_i / sum(w)) * d_i)
            var delta = block.Scratch.Rent(block.Output.dtype);
            block.Output.copy_(baseBlock);
            for (var i = 0; i < block.Models.Count; i++)
            {
                delta.copy_(block.Models[i]).sub_(baseBlock);
                block.Output.add_(delta, alpha: t * weights[i] / weightSum);
            }
        }

        public void Dispose()
        {
        }
    }
}
