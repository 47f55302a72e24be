using System.Diagnostics;
using System.Text;

namespace SensMerging.Host.Tests;

/// <summary>
/// A running <c>sensmerge</c> child process that a test can signal. It starts through <c>env --default-signal=INT,TERM</c>
/// (which execs dotnet in the same process) so that the child does not inherit an ignored SIGINT from whatever started
/// the test run (a background job of a non-interactive shell ignores it, and .NET keeps it ignored).
/// </summary>
internal sealed class SensMergeProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();
    private readonly TaskCompletionSource _firstLine = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private SensMergeProcess(Process process)
    {
        _process = process;
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }
            lock (_stdout)
            {
                _stdout.AppendLine(e.Data);
            }
            _firstLine.TrySetResult();
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (_stderr)
                {
                    _stderr.AppendLine(e.Data);
                }
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public int Id => _process.Id;

    public bool HasExited => _process.HasExited;

    public int ExitCode => _process.ExitCode;

    public string StdOut
    {
        get
        {
            lock (_stdout)
            {
                return _stdout.ToString();
            }
        }
    }

    public string StdErr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    public static SensMergeProcess Start(IEnumerable<string> args, IDictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo("env")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "--default-signal=INT,TERM", "dotnet", TestPaths.HostDll }.Concat(args))
        {
            start.ArgumentList.Add(a);
        }
        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[k] = v;
        }
        return new SensMergeProcess(Process.Start(start) ?? throw new InvalidOperationException("cannot start sensmerge"));
    }

    /// <summary>Sends a signal (<c>INT</c>, <c>TERM</c>, <c>KILL</c>) with <c>kill</c>, as a user or a supervisor would.</summary>
    public async Task SignalAsync(string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", ["-s", signal, Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]) { UseShellExecute = false })
            ?? throw new InvalidOperationException("cannot start kill");
        await kill.WaitForExitAsync();
        Assert.True(kill.ExitCode == 0, $"kill -s {signal} {Id} failed");
    }

    /// <summary>Waits for the first line on stdout (false when the process ended or the time ran out first).</summary>
    public async Task<bool> FirstLineAsync(TimeSpan timeout)
    {
        var exited = _process.WaitForExitAsync();
        var first = await Task.WhenAny(_firstLine.Task, exited, Task.Delay(timeout));
        return first == _firstLine.Task;
    }

    /// <summary>Waits for the exit; false (and the process killed) when it has not exited within <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
            return false;
        }
    }

    /// <summary>Polls <paramref name="condition"/> until it holds (true), the process exits or the time runs out (false).</summary>
    public async Task<bool> UntilAsync(Func<Task<bool>> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline && !_process.HasExited)
        {
            if (await condition())
            {
                return true;
            }
            await Task.Delay(25);
        }
        return false;
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }
        _process.Dispose();
    }
}
