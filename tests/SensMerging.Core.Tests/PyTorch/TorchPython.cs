using System.Diagnostics;

namespace SensMerging.Core.Tests.PyTorch;

/// <summary>Runs <c>PyTorch/torch_fixtures.py</c> with <c>/usr/bin/python3</c> (Debian's python3-torch, installed by setup.sh).</summary>
internal static class TorchPython
{
    public const string Python = "/usr/bin/python3";

    private static readonly Lazy<string?> Missing = new(Probe);

    /// <summary>Why the fixtures cannot be made here, or null when they can.</summary>
    public static string? WhyUnavailable => Missing.Value;

    /// <summary>Runs one fixture command and returns its output; throws with its stderr when it fails.</summary>
    public static string Run(params string[] args)
    {
        var script = Path.Combine(AppContext.BaseDirectory, "PyTorch", "torch_fixtures.py");
        var (code, output) = Exec([script, .. args]);
        if (code != 0)
        {
            throw new InvalidOperationException($"torch_fixtures.py {string.Join(' ', args)} failed ({code}): {output}");
        }
        return output;
    }

    /// <summary>Runs python with a snippet; returns its exit code and output.</summary>
    public static (int Code, string Output) Exec(params string[] args)
    {
        var start = new ProcessStartInfo(Python) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout + stderr.Result);
    }

    private static string? Probe()
    {
        if (!File.Exists(Python))
        {
            return $"{Python} is absent (scripts/setup.sh installs python3-torch)";
        }
        var (code, output) = Exec("-c", "import torch");
        return code == 0 ? null : $"{Python} has no torch (scripts/setup.sh installs python3-torch): {output.Trim()}";
    }
}

/// <summary>A fact that needs PyTorch to make its fixtures; skipped, saying why, where <see cref="TorchPython"/> is unavailable.</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class TorchFactAttribute : FactAttribute
{
    public TorchFactAttribute()
    {
        if (TorchPython.WhyUnavailable is { } why)
        {
            Skip = why;
        }
    }
}

/// <summary>A theory that needs PyTorch (see <see cref="TorchFactAttribute"/>).</summary>
[AttributeUsage(AttributeTargets.Method)]
public sealed class TorchTheoryAttribute : TheoryAttribute
{
    public TorchTheoryAttribute()
    {
        if (TorchPython.WhyUnavailable is { } why)
        {
            Skip = why;
        }
    }
}
