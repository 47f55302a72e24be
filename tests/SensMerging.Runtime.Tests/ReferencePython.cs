using System.Diagnostics;

namespace SensMerging.Runtime.Tests;

/// <summary>
/// Runs <c>Reference/decoder_reference.py</c> with <c>/usr/bin/python3</c> (Debian's python3-torch, which
/// scripts/setup.sh installs). A machine without it fails the tests that need it, saying so: nothing is skipped.
/// </summary>
internal static class ReferencePython
{
    public const string Python = "/usr/bin/python3";

    private static readonly Lazy<string?> Missing = new(Probe);

    /// <summary>
    /// A random model of the architecture <paramref name="configJson"/> describes, made by the reference script with
    /// <paramref name="seed"/> in <paramref name="dtype"/> in the folder <paramref name="folder"/>, with the tests' word
    /// tokenizer; returns the folder.
    /// </summary>
    public static async Task<string> MakeModelAsync(string folder, string configPath, string configJson, int seed, string dtype)
    {
        await File.WriteAllTextAsync(configPath, configJson);
        Run("make", configPath, folder, seed.ToString(System.Globalization.CultureInfo.InvariantCulture), dtype);
        await File.WriteAllTextAsync(System.IO.Path.Combine(folder, "tokenizer.json"), TinyModel.WordTokenizerJson());
        return folder;
    }

    /// <summary>Runs the reference script; returns its stdout, or throws with its stderr.</summary>
    public static string Run(params string[] args)
    {
        if (Missing.Value is { } why)
        {
            throw new InvalidOperationException($"The architecture reference needs PyTorch: {why}. Run scripts/setup.sh (it installs python3-torch).");
        }
        var script = Path.Combine(AppContext.BaseDirectory, "Reference", "decoder_reference.py");
        var (code, stdout, stderr) = Exec([script, .. args]);
        if (code != 0)
        {
            throw new InvalidOperationException($"decoder_reference.py {string.Join(' ', args)} failed ({code}): {stderr}");
        }
        return stdout;
    }

    private static (int Code, string Stdout, string Stderr) Exec(params string[] args)
    {
        var start = new ProcessStartInfo(Python) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }
        // One thread: the machine is shared and the reference models are tiny.
        start.Environment["OMP_NUM_THREADS"] = "1";
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout, stderr.Result);
    }

    private static string? Probe()
    {
        if (!File.Exists(Python))
        {
            return $"{Python} is absent";
        }
        var (code, _, stderr) = Exec("-c", "import torch");
        return code == 0 ? null : $"{Python} has no torch module ({stderr.Trim()})";
    }
}
