using System.Diagnostics;

namespace SensMerging.Hub.Tests;

/// <summary>
/// The official JavaScript Hub client (@huggingface/hub, pinned in JsClient/package.json and package-lock.json),
/// installed with <c>npm ci</c> into JsClient/node_modules the first time a test needs it (once, under a file lock).
/// </summary>
internal static class JsClient
{
    private static readonly SemaphoreSlim Gate = new(1, 1);

    /// <summary>The fixture folder in the source tree.</summary>
    public static string Folder { get; } = FindFolder();

    /// <summary>Installs the client when missing.</summary>
    public static async Task EnsureInstalledAsync()
    {
        await Gate.WaitAsync();
        try
        {
            using var fileLock = new FileStream(Path.Combine(Folder, ".install.lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            if (File.Exists(Path.Combine(Folder, "node_modules", "@huggingface", "hub", "package.json")))
            {
                return;
            }

            var (code, stdout, stderr) = await RunAsync("npm", ["ci", "--no-audit", "--no-fund"], TimeSpan.FromMinutes(5));
            Assert.True(code == 0, $"npm ci in {Folder} failed ({code}): {stdout}\n{stderr}");
        }
        finally
        {
            Gate.Release();
        }
    }

    /// <summary>Runs a program in the fixture folder; returns its exit code and output.</summary>
    public static async Task<(int Code, string StdOut, string StdErr)> RunAsync(string program, IEnumerable<string> args, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = Folder,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }

        start.Environment["CI"] = "true";
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException($"'{program}' could not be started (Node.js 18+ and npm are needed for this test; scripts/setup.sh installs them): {ex.Message}", ex);
        }

        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using var cts = new CancellationTokenSource(timeout);
            try
            {
                await process.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish within {timeout}: {await stdout}\n{await stderr}");
            }

            return (process.ExitCode, await stdout, await stderr);
        }
    }

    private static string FindFolder()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "tests", "SensMerging.Hub.Tests", "JsClient");
            if (File.Exists(Path.Combine(candidate, "package.json")))
            {
                return candidate;
            }
        }

        throw new DirectoryNotFoundException("tests/SensMerging.Hub.Tests/JsClient not found above " + AppContext.BaseDirectory);
    }
}
