using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;
using static SensMerging.Strategies.Interpolation.Temporaries;

namespace SensMerging.Strategies.Interpolation;

/// <summary>
/// NuSLERP (mergekit <c>nuslerp</c>): spherical interpolation between exactly two models (their task vectors when a base
/// is given, the base added back) at t = w_1 / (w_0 + w_1) (0.5 when the weights sum to under 1e-6). With
/// <c>nuslerp_flatten</c> (default) the whole tensor is one vector; otherwise every row (last dimension) is one, or
/// every column with <c>nuslerp_row_wise</c>. Per vector: directions normalized with norms floored at 1e-7,
/// theta = acos(clamp(cos)), <c>(sin((1 - t) theta) v0 + sin(t theta) v1) / sin theta</c>, and the linear interpolation
/// where |sin theta| &lt; 1e-8. Streams: one statistics pass gathers each vector's norms and dot product (double).
/// With a half-precision <see cref="MergeTensorRequest.ComputeDType"/> it runs mergekit's torch operations in that dtype
/// on whole tensors instead (<see cref="StrategyTraits.RoundsIntermediates"/>; see <see cref="MergeInComputeDType"/>).
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

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: false, MinModels: 2, MaxModels: 2, Elementwise: false) { RoundsIntermediates = true };

    public void Merge(MergeTensorRequest request) => WholeTensor.Merge(this, request, MergeInComputeDType);

    /// <summary>mergekit's t: w1 / (w0 + w1) in double (Python floats), 0.5 when |w0 + w1| &lt; 1e-6.</summary>
    public static double InterpolationT(double w0, double w1)
    {
        var sum = w0 + w1;
        return Math.Abs(sum) < 1e-6 ? 0.5 : w1 / sum;
    }

    /// <summary>
    /// mergekit a6e4028's nuslerp on tensors of the compute dtype, each torch operation rounding its result: with a base
    /// the task vectors <c>x_i - base</c>; the vectors (flattened, rows, or with <c>nuslerp_row_wise</c> the tensor
    /// transposed by <c>transpose(0, -1)</c>, a strided view as in mergekit, so torch reduces it in the same order);
    /// <c>v / norm(v, dim=-1).clamp(min=1e-7)</c> (the norm accumulated in float32 by torch and rounded once, the bound cast
    /// to the dtype: 1.19e-7 in float16); <c>cos = sum(u0 * u1, dim=-1)</c>; <c>theta = acos(cos.clamp(-1, 1))</c>;
    /// <c>(sin((1 - t) theta) v0 + sin(t theta) v1) / sin theta</c> with the Python floats 1 - t and t entering their
    /// products as float32; where <c>|sin theta| &lt; 1e-8</c> (the bound cast to the dtype: 0 in float16, so no vector
    /// counts as colinear there) <c>(1 - t) v0 + t v1</c>; the base added back.
    /// </summary>
    private static void MergeInComputeDType(MergeTensorRequest request)
    {
        var dtype = request.ComputeDType;
        var t = InterpolationT(request.Weights[0], request.Weights[1]);
        var flatten = request.Parameters.Boolean("nuslerp_flatten");
        var rowWise = request.Parameters.Boolean("nuslerp_row_wise");
        using var noGrad = torch.no_grad();
        // Small values (norms, angles) stay in this scope; whole-tensor temporaries are freed as soon as they are used.
        using var scope = torch.NewDisposeScope();
        // The casts are exact: the host already rounded the inputs to the dtype.
        var baseTensor = request.Base?.to(dtype);
        var v0 = request.Models[0].to(dtype);
        var v1 = request.Models[1].to(dtype);
        if (baseTensor is not null)
        {
            v0 = Replace(v0, v0.sub(baseTensor));
            v1 = Replace(v1, v1.sub(baseTensor));
        }
        var shape = v0.shape;
        var transposed = false;
        if (flatten)
        {
            v0 = Replace(v0, v0.reshape(-1));
            v1 = Replace(v1, v1.reshape(-1));
        }
        else if (rowWise && v0.dim() > 1)
        {
            v0 = Replace(v0, v0.transpose(0, -1));
            v1 = Replace(v1, v1.transpose(0, -1));
            transposed = true;
        }
        torch.Tensor cos;
        using (var u0 = Normalize(v0))
        using (var u1 = Normalize(v1))
        using (var product = u0.mul(u1))
        {
            cos = product.sum(-1L, keepdim: true);
        }
        var theta = cos.clamp(-1, 1).acos();
        var sin = theta.sin();
        var colinear = sin.abs().lt(ColinearSine);
        torch.Tensor spherical;
        using (var part0 = theta.mul(1 - t).sin().mul(v0))
        using (var part1 = theta.mul(t).sin().mul(v1))
        using (var sum = part0.add(part1))
        {
            spherical = sum.div(sin);
        }
        torch.Tensor linear;
        using (var part0 = v0.mul(1 - t))
        using (var part1 = v1.mul(t))
        {
            linear = part0.add(part1);
        }
        v0.Dispose();
        v1.Dispose();
        var merged = torch.where(colinear, linear, spherical);
        linear.Dispose();
        spherical.Dispose();
        if (transposed)
        {
            merged = Replace(merged, merged.transpose(0, -1));
        }
        merged = Replace(merged, merged.reshape(shape));
        if (baseTensor is not null)
        {
            merged = Replace(merged, baseTensor.add(merged));
        }
        request.Output.copy_(merged);
        merged.Dispose();
    }

    /// <summary>mergekit's <c>_normalize</c>: <c>x / norm(x, dim=-1, keepdim=True).clamp(min=1e-7)</c>.</summary>
    private static torch.Tensor Normalize(torch.Tensor x)
    {
        using var norm = torch.linalg.vector_norm(x, 2, [-1L], keepdim: true);
        using var floored = norm.clamp_min(NormFloor);
        return x.div(floored);
    }

    public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
    {
        RequestChecks.Check(tensor, Name, Traits);
        var t = InterpolationT(tensor.Weights[0], tensor.Weights[1]);
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
