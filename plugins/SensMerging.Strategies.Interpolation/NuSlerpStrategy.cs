using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;

namespace SensMerging.Strategies.Interpolation;

/// <summary>
/// NuSLERP (mergekit <c>nuslerp</c>): spherical interpolation between exactly two models (their task vectors when a base
/// is given, the base added back) at t = w_1 / (w_0 + w_1) (0.5 when the weights sum to under 1e-6). With
/// <c>nuslerp_flatten</c> (default) the whole tensor is one vector; otherwise every row (last dimension) is one, or
/// every column with <c>nuslerp_row_wise</c>. Per vector: directions normalized with norms floored at 1e-7,
/// theta = acos(clamp(cos)), <c>(sin((1 - t) theta) v0 + sin(t theta) v1) / sin theta</c>, and the linear interpolation
/// where |sin theta| &lt; 1e-8. Streams: one statistics pass gathers each vector's norms and dot product (double).
/// </summary>
public sealed class NuSlerpStrategy : IStreamingMergeStrategy
{
    /// <summary>Floor of a norm before dividing by it (mergekit's _normalize eps).</summary>
    public const double NormFloor = 1e-7;

    /// <summary>Below this |sin theta| the vectors count as colinear.</summary>
    public const double ColinearSine = 1e-8;

    public string Name => "nuslerp";

    public string Description => "Spherical interpolation between two models (around the base when given) at t = w1 / (w0 + w1), per tensor, per row or per column.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("weight", null, ParameterScope.PerModel, "Weight of the model; t = w1 / (w0 + w1)."),
        ParameterSpec.Boolean("nuslerp_flatten", true, ParameterScope.Global, "Interpolate the whole tensor as one vector."),
        ParameterSpec.Boolean("nuslerp_row_wise", false, ParameterScope.Global, "Without flattening: one interpolation per column instead of per row."),
    ];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: false, MinModels: 2, MaxModels: 2, Elementwise: false);

    public void Merge(MergeTensorRequest request) => WholeTensor.Merge(this, request);

    public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
    {
        RequestChecks.Check(tensor, Name, Traits);
        var sum = tensor.Weights[0] + tensor.Weights[1];
        var t = Math.Abs(sum) < 1e-6 ? 0.5 : tensor.Weights[1] / sum;
        var shape = tensor.Shape;
        var elements = tensor.ElementCount;
        Func<long, long> vectorOf = _ => 0;
        long vectors = 1;
        if (!tensor.Parameters.Boolean("nuslerp_flatten") && shape.Count >= 2)
        {
            var columns = shape[^1];
            if (tensor.Parameters.Boolean("nuslerp_row_wise"))
            {
                // dim 0 moved last: one vector per index of the other dimensions (for 2-D, per column)
                var inner = elements / shape[0];
                vectors = inner;
                vectorOf = e => e % inner;
            }
            else
            {
                vectors = elements / columns;
                vectorOf = e => e / columns;
            }
        }
        return new Session(t, new SegmentedGram(2, vectors, vectorOf));
    }

    /// <summary>The coefficients (s0, s1) of v0 and v1 for one vector with the given norms and dot product.</summary>
    public static (double S0, double S1) Coefficients(double t, double norm0, double norm1, double dot)
    {
        var cos = Math.Clamp(dot / (Math.Max(norm0, NormFloor) * Math.Max(norm1, NormFloor)), -1, 1);
        var theta = Math.Acos(cos);
        var sin = Math.Sin(theta);
        return Math.Abs(sin) < ColinearSine ? (1 - t, t) : (Math.Sin((1 - t) * theta) / sin, Math.Sin(t * theta) / sin);
    }

    private sealed class Session(double t, SegmentedGram gram) : ITensorMergeSession
    {
        private double[]? _s0;
        private double[]? _s1;

        public bool BeginPass(int pass)
        {
            if (pass == 0)
            {
                return true;
            }
            if (_s0 is null)
            {
                var n = (int)gram.Segments;
                _s0 = new double[n];
                _s1 = new double[n];
                for (var v = 0; v < n; v++)
                {
                    (_s0[v], _s1[v]) = Coefficients(t, Math.Sqrt(gram.Sum(v, 0, 0)), Math.Sqrt(gram.Sum(v, 1, 1)), gram.Sum(v, 0, 1));
                }
            }
            return false;
        }

        public void Observe(MergeTensorRequest block) => gram.Add(block.Models, block.Base, block.ElementStart);

        public void Merge(MergeTensorRequest block)
        {
            if (_s0 is null || _s1 is null)
            {
                throw new InvalidOperationException($"nuslerp: tensor '{block.TensorName}': Merge was called before the statistics pass ended.");
            }
            using var noGrad = torch.no_grad();
            var delta = block.Scratch.Rent(block.Output.dtype);
            using var scope = torch.NewDisposeScope();
            var s0 = gram.Expand(_s0, block.ElementStart, block.Output);
            var s1 = gram.Expand(_s1, block.ElementStart, block.Output);
            if (block.Base is null)
            {
                block.Output.zero_();
            }
            else
            {
                block.Output.copy_(block.Base);
            }
            for (var i = 0; i < 2; i++)
            {
                delta.copy_(block.Models[i]);
                if (block.Base is not null)
                {
                    delta.sub_(block.Base);
                }
                // mul_ then add_ (the same roundings as addcmul_ with value 1) with no Scalar operand: a libtorch Scalar
                // made for the call was seen freed under the engine's two workers (c10 Scalar "toFloat" check failed).
                block.Output.add_(delta.mul_(i == 0 ? s0 : s1));
            }
        }

        public void Dispose()
        {
        }
    }
}
