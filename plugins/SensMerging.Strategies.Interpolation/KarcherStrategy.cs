using SensMerging.Abstractions;
using SensMerging.Strategies.Common;
using TorchSharp;
using static SensMerging.Strategies.Interpolation.Temporaries;

namespace SensMerging.Strategies.Interpolation;

/// <summary>
/// Karcher mean (mergekit <c>karcher</c>): the Riemannian mean on the hypersphere of the models' directions, with equal
/// weights, scaled by the mean of their norms. Every input counts, the base model too when the config names one (as in
/// mergekit); configured weights are not used (mergekit's weights are fixed at 1/k). Iterates at most
/// <c>max_iter</c> times, stopping when the tangent step's norm falls under <c>tol</c>; directions with norm under
/// <c>tol</c> are left out of the mean. The iterate always lies in the span of the inputs, so the session runs the
/// iteration on coefficients over their Gram matrix (<see cref="BlockGram"/>, one statistics pass, double) and writes
/// each block as a weighted sum of the inputs: the same algorithm as mergekit's, in double instead of float32. With a
/// half-precision <see cref="MergeTensorRequest.ComputeDType"/> it runs mergekit's torch operations in that dtype on whole
/// tensors instead (<see cref="StrategyTraits.RoundsIntermediates"/>; see <see cref="MergeInComputeDType"/>).
/// </summary>
public sealed class KarcherStrategy : IStreamingMergeStrategy
{
    public string Name => "karcher";

    public string Description => "Riemannian (Karcher) mean of the models' directions on the hypersphere, scaled by their mean norm; the base counts as one of the models.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Integer("max_iter", 10, ParameterScope.Global, "Most iterations of the mean.", min: 0),
        ParameterSpec.Float("tol", 1e-5, ParameterScope.Global, "Convergence tolerance (and the smallest norm a direction may have).", min: 0),
    ];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: false, MinModels: 1, Elementwise: false) { RoundsIntermediates = true };

    public void Merge(MergeTensorRequest request) => WholeTensor.Merge(this, request, MergeInComputeDType);

    /// <summary>
    /// mergekit a6e4028's <c>karcher_merge_tensors</c> on tensors of the compute dtype, each torch operation rounding its
    /// result where mergekit's does. The inputs in mergekit's order: the models as configured, then the base (mergekit
    /// appends the base when the config does not list it among the models; the host does not say where a listed base
    /// stood, so it is taken last then too). Norms are float32 (<c>norm(t.float())</c>, taken as Python floats);
    /// <c>t / n</c> divides by the float32 norm; <c>u += a * u_i</c> rounds each addition; the dot products are torch's
    /// <c>dot</c> in the dtype; <c>a * (theta / sin theta) * (u_i - dot * u)</c> with a as a float32; the update
    /// <c>cos(|T|) * u + sin(|T|) * (T / |T|)</c> takes the float32 cosine and sine as first operands of the products, which
    /// rounds them to the dtype first, and divides T by the float32 norm; the scale is a Python float (a float32 factor).
    /// </summary>
    private static void MergeInComputeDType(MergeTensorRequest request)
    {
        var dtype = request.ComputeDType;
        var maxIterations = (int)request.Parameters.Integer("max_iter");
        var tol = request.Parameters.Float("tol");
        using var noGrad = torch.no_grad();
        // Whole-tensor temporaries are freed as soon as mergekit's would be (its Python references drop): the units stay
        // for the whole iteration, u and T for one step.
        using var scope = torch.NewDisposeScope();
        // The casts are exact: the host already rounded the inputs to the dtype.
        var inputs = request.Models.Select(m => m.to(dtype)).ToList();
        if (request.Base is not null)
        {
            inputs.Add(request.Base.to(dtype));
        }
        var k = inputs.Count;
        if (k == 1)
        {
            request.Output.copy_(inputs[0]);
            return;
        }
        var alpha = 1.0 / k;
        var norms = new double[k];
        var units = new torch.Tensor[k];
        for (var i = 0; i < k; i++)
        {
            using var norm = Norm32(inputs[i]);
            norms[i] = norm.item<float>();
            units[i] = norms[i] == 0 ? torch.zeros_like(inputs[i]) : inputs[i].div(norm);
            inputs[i].Dispose(); // the cast (a new tensor when the buffer is float32)
        }
        var valid = Enumerable.Range(0, k).Where(i => norms[i] > tol).ToArray();
        if (valid.Length == 0)
        {
            request.Output.zero_();
            return;
        }
        double alphaSum = 0; // Python's sum() of the valid weights
        foreach (var _ in valid)
        {
            alphaSum += alpha;
        }
        var weight = alpha / alphaSum;
        var u = torch.zeros_like(units[valid[0]]);
        foreach (var i in valid)
        {
            using var term = units[i].mul(weight);
            u.add_(term);
        }
        double normU;
        using (var norm = Norm32(u))
        {
            normU = norm.item<float>();
        }
        u = Replace(u, normU < tol ? units[valid[0]].clone() : u.div(normU));
        for (var iteration = 0; iteration < maxIterations; iteration++)
        {
            var step = torch.zeros_like(u);
            foreach (var i in valid)
            {
                using var stepScope = torch.NewDisposeScope();
                var dot = torch.dot(u.flatten(), units[i].flatten()).clamp(-1.0, 1.0);
                var theta = dot.arccos();
                if (theta.to(torch.ScalarType.Float32).item<float>() < tol)
                {
                    continue;
                }
                var coefficient = theta.div(theta.sin()).mul(weight);
                var projected = dot.mul(u);
                var tangent = units[i].sub(projected);
                projected.Dispose();
                var term = coefficient.mul(tangent);
                tangent.Dispose();
                step.add_(term);
            }
            using var stepNorm = Norm32(step);
            if (stepNorm.item<float>() < tol)
            {
                step.Dispose();
                break;
            }
            torch.Tensor next;
            using (var stepScope = torch.NewDisposeScope())
            {
                var along = stepNorm.cos().mul(u);
                var direction = step.div(stepNorm);
                step.Dispose();
                var across = stepNorm.sin().mul(direction);
                direction.Dispose();
                next = along.add(across).MoveToOuterDisposeScope();
            }
            u = Replace(u, next);
            using var length = Norm32(u);
            if (length.item<float>() > tol)
            {
                u = Replace(u, u.div(length));
            }
        }
        double scale = 0;
        foreach (var norm in norms)
        {
            scale += alpha * norm;
        }
        using var merged = u.mul(scale);
        request.Output.copy_(merged);
    }

    /// <summary>mergekit's <c>torch.linalg.norm(t.float())</c>: the float32 norm of the whole tensor (a 0-d float32 tensor).</summary>
    private static torch.Tensor Norm32(torch.Tensor x)
    {
        using var wide = x.to(torch.ScalarType.Float32);
        return torch.linalg.vector_norm(wide);
    }

    public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
    {
        RequestChecks.Check(tensor, Name, Traits);
        var inputs = tensor.Weights.Count + (tensor.HasBase ? 1 : 0);
        return new Session(inputs, (int)tensor.Parameters.Integer("max_iter"), tensor.Parameters.Float("tol"));
    }

    /// <summary>The coefficient of each input in the result, from the inputs' Gram matrix (mergekit's iteration).</summary>
    public static double[] Coefficients(int k, Func<int, int, double> gram, int maxIterations, double tol)
    {
        ArgumentNullException.ThrowIfNull(gram);
        var norms = Enumerable.Range(0, k).Select(i => Math.Sqrt(Math.Max(0, gram(i, i)))).ToArray();
        var valid = Enumerable.Range(0, k).Where(i => norms[i] > tol).ToArray();
        var result = new double[k];
        if (valid.Length == 0)
        {
            return result; // zeros
        }
        var m = valid.Length;
        var alphas = Enumerable.Repeat(1.0 / m, m).ToArray(); // equal weights over the valid directions
        // Gram matrix of the unit directions.
        var unit = new double[m, m];
        for (var a = 0; a < m; a++)
        {
            for (var b = 0; b < m; b++)
            {
                unit[a, b] = gram(valid[a], valid[b]) / (norms[valid[a]] * norms[valid[b]]);
            }
        }
        double Norm(double[] c)
        {
            double sum = 0;
            for (var a = 0; a < m; a++)
            {
                for (var b = 0; b < m; b++)
                {
                    sum += c[a] * c[b] * unit[a, b];
                }
            }
            return Math.Sqrt(Math.Max(0, sum));
        }
        // u, as coefficients over the unit directions: the normalized weighted mean to start.
        var u = (double[])alphas.Clone();
        var initial = Norm(u);
        if (initial < tol)
        {
            u = new double[m];
            u[0] = 1;
        }
        else
        {
            u = [.. u.Select(c => c / initial)];
        }
        for (var iteration = 0; iteration < maxIterations; iteration++)
        {
            var step = new double[m];
            for (var i = 0; i < m; i++)
            {
                double dot = 0;
                for (var b = 0; b < m; b++)
                {
                    dot += u[b] * unit[i, b];
                }
                dot = Math.Clamp(dot, -1, 1);
                var theta = Math.Acos(dot);
                if (theta < tol)
                {
                    continue;
                }
                var scale = alphas[i] * theta / Math.Sin(theta);
                step[i] += scale;
                for (var b = 0; b < m; b++)
                {
                    step[b] -= scale * dot * u[b];
                }
            }
            var stepNorm = Norm(step);
            if (stepNorm < tol)
            {
                break;
            }
            var (cos, sin) = (Math.Cos(stepNorm), Math.Sin(stepNorm));
            u = [.. u.Select((c, b) => (cos * c) + (sin * step[b] / stepNorm))];
            var length = Norm(u);
            if (length > tol)
            {
                u = [.. u.Select(c => c / length)];
            }
        }
        // Scale: the mean norm over every input (zero-norm ones included, each weighted 1/k).
        var meanNorm = norms.Sum() / k;
        for (var a = 0; a < m; a++)
        {
            result[valid[a]] = meanNorm * u[a] / norms[valid[a]];
        }
        return result;
    }

    private sealed class Session(int inputs, int maxIterations, double tol) : ITensorMergeSession
    {
        private readonly BlockGram _gram = new(inputs);
        private double[]? _coefficients;

        public bool BeginPass(int pass)
        {
            if (inputs == 1)
            {
                return false;
            }
            if (pass == 0)
            {
                return true;
            }
            _coefficients ??= Coefficients(inputs, _gram.Sum, maxIterations, tol);
            return false;
        }

        public void Observe(MergeTensorRequest block) => _gram.Add(Inputs(block), null, block.ElementStart);

        public void Merge(MergeTensorRequest block)
        {
            using var noGrad = torch.no_grad();
            var all = Inputs(block);
            if (inputs == 1)
            {
                block.Output.copy_(all[0]);
                return;
            }
            var coefficients = _coefficients ?? throw new InvalidOperationException(
                $"karcher: tensor '{block.TensorName}': Merge was called before the statistics pass ended.");
            block.Output.zero_();
            for (var i = 0; i < all.Count; i++)
            {
                if (coefficients[i] != 0)
                {
                    block.Output.add_(all[i], alpha: coefficients[i]);
                }
            }
        }

        public void Dispose()
        {
        }

        private static IReadOnlyList<torch.Tensor> Inputs(MergeTensorRequest block) =>
            block.Base is null ? block.Models : [block.Base, .. block.Models];
    }
}
