using TorchSharp;

namespace SensMerging.Strategies.Interpolation;

/// <summary>The whole-tensor temporaries of the half-precision paths, freed as soon as the next step replaces them.</summary>
internal static class Temporaries
{
    /// <summary>Frees <paramref name="old"/> (a view or a whole-tensor temporary) and returns <paramref name="next"/>.</summary>
    public static torch.Tensor Replace(torch.Tensor old, torch.Tensor next)
    {
        old.Dispose();
        return next;
    }
}
